"""Where the benchmark connects and keeps its files; one place for names shared by every module."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project
STATE = ROOT / ".state" / "bench"  # chDB folders, CSV dumps, tool state (git-ignored)
RESULTS = Path(__file__).resolve().parent / "results"  # git-ignored

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MY_HOST, MY_PORT, MY_USER = "127.0.0.1", 3306, "root"
SRC_DB = "ma_bench"  # source database on both servers
DST_DB = "ma_bench_dst"  # PostgreSQL destination, dropped and re-created before every measurement
TABLE = "bench_rows"  # the big table
TINY = "bench_tiny"  # first rows of TABLE: warm-up runs and the Prefect overhead measurement
TINY_ROWS = 2000

PG_SRC_URL = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{SRC_DB}"
PG_DST_URL = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DST_DB}"
MY_SRC_URL = f"mysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{SRC_DB}"


def chdb_url(folder: Path, database: str = "bench") -> str:
    return f"chdb://{folder.resolve()}?database={database}"


def psql_cmd(db: str) -> list[str]:
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", db]


def mariadb_cmd(db: str | None = None) -> list[str]:
    cmd = ["mariadb", "--protocol=TCP", "-h", MY_HOST, "-P", str(MY_PORT), "-u", MY_USER]
    return cmd + ([db] if db else [])


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: UTC everywhere, no telemetry, no prompts."""
    env = dict(os.environ)
    env.update({
        "PGTZ": "UTC", "TZ": "UTC", "PGOPTIONS": "-c timezone=UTC",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": env.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"),
        "PREFECT_HOME": env.get("PREFECT_HOME", str(ROOT / ".state" / "prefect")),
        "SLING_DISABLE_TELEMETRY": "true", "RUNTIME__DLTHUB_TELEMETRY": "false",
    })
    env.update(extra)
    return env
