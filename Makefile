# Everything a newcomer needs: `make demo` and `make test` create .venv from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.state
export PREFECT_HOME ?= $(STATE)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

export MA_PROJECT_DIR := $(CURDIR)
POOL := migrations

.PHONY: demo test bench bench-api install clean server worker deploy serve

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

test: install   ## two xdist workers, a test file at a time; each starts one Prefect server (tests/prefect_server.py)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

bench-api: install   ## status endpoint under load while a migration runs (PostgreSQL needed)
	$(BIN)/python -m bench.api_status $(BENCH_ARGS)

serve: install   ## the REST API on http://127.0.0.1:8000 (needs PREFECT_API_URL and a worker for runs)
	$(BIN)/migration-assistant serve $(SERVE_ARGS)

server: install   ## a local Prefect server with the UI on http://127.0.0.1:4200
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

worker: install   ## a process worker for the migrations pool (needs PREFECT_API_URL)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/prefect worker start --pool $(POOL)

deploy: install   ## register block types, create the pool if missing, deploy every flow
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/python -m deployments.setup

clean:
	rm -rf $(VENV) $(STATE)
