# Everything a newcomer needs: `make demo` and `make test` create .venv from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.state
export PREFECT_HOME ?= $(STATE)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: demo test bench install clean

$(BIN)/migration-assistant: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python --override overrides.txt -e '.[dev]'
	mkdir -p $(PREFECT_HOME)
	$(BIN)/prefect server database upgrade -y >/dev/null
	touch $@

install: $(BIN)/migration-assistant

demo: install
	$(BIN)/migration-assistant demo

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(STATE)
