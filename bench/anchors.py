"""Anchors: other ways to move the same table, timed the same way, to judge our numbers by.

Every anchor loads into a table with the source's columns and primary key (sling and dlt
excepted, see their notes), in the freshly re-created destination database, and counts only
if the destination then holds the source's row count, non-NULL note count and sum of keys.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time

from bench import config as C
from bench import sources
from bench.measure import (
    Context,
    Measurement,
    Sampler,
    Skip,
    check_landed,
    mb,
    run_tool,
    self_maxrss_mb,
)

PANDAS_MAX_ROWS = 100_000
COLUMNS = "id, qty, code, amount, created_at, active, note, attrs"


def _which(*tools: str) -> str | None:
    missing = [t for t in tools if not shutil.which(t)]
    return f"{', '.join(missing)} not on PATH" if missing else None


def _quote(args: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in args)


def _landed_pg(table: str = C.TABLE, schema: str = "public") -> dict:
    return sources.pg_fingerprint(C.DST_DB, table, schema)


# --- (1) psql binary COPY pipe, PG->PG ----------------------------------------------------

def psql_pipe(ctx: Context) -> dict:
    expected = sources.source_fingerprint()
    sources.create_pg_table(C.DST_DB, C.TABLE)
    out = _quote(C.psql_cmd(C.SRC_DB) + ["-c", f"COPY {C.TABLE} TO STDOUT (FORMAT binary)"])
    into = _quote(C.psql_cmd(C.DST_DB) + ["-c", f"COPY {C.TABLE} FROM STDIN (FORMAT binary)"])
    result = run_tool(f"{out} | {into}", shell=True)
    check_landed(_landed_pg(), expected, "psql pipe")
    return {"rows": ctx.rows, **result}


# --- (2) chDB's own postgresql() table function, PG->CH ----------------------------------

CH_DDL = """CREATE TABLE bench.bench_rows (
    id Int64, qty Nullable(Int32), code Nullable(String), amount Nullable(Decimal(12, 2)),
    created_at Nullable(DateTime64(6, 'UTC')), active Nullable(Bool), note Nullable(String),
    attrs Nullable(String)
) ENGINE = MergeTree ORDER BY (id)"""  # the table our ClickHouse connector creates for bench_rows


def chdb_postgresql(ctx: Context) -> dict:
    import chdb
    expected = sources.source_fingerprint()
    folder = ctx.workdir / "chdb"
    conn = chdb.connect(str(folder))
    cur = conn.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS bench")
    cur.execute(CH_DDL)
    probe_conn = chdb.connect(str(folder))  # a second handle on the same engine; keep it referenced
    probe_cur = probe_conn.cursor()

    def probe() -> float:
        probe_cur.execute("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'")
        return float(probe_cur.fetchone()[0])

    sql = (f"INSERT INTO bench.bench_rows SELECT {COLUMNS} FROM postgresql('{C.PG_HOST}:{C.PG_PORT}', "
           f"'{C.SRC_DB}', '{C.TABLE}', '{C.PG_USER}', '')")
    with Sampler(probe=probe) as s:
        started = time.perf_counter()
        cur.execute(sql)
        wall = time.perf_counter() - started
    cur.execute("SELECT count(), count(note), sum(id) FROM bench.bench_rows")
    n, notes, keys = cur.fetchone()
    check_landed({"rows": int(n), "notes": int(notes), "key_sum": int(keys)}, expected, "chdb postgresql()")
    return {"rows": ctx.rows, "wall_s": wall, "peak_rss_mb": self_maxrss_mb(), "rss_basis": "self",
            "sampled_peak_self_mb": mb(s.peak_self), "chdb_tracked_peak_mb": mb(s.peak_probe)}


# --- (3) mariadb --batch | psql COPY (text), MySQL->PG ------------------------------------

def mariadb_pipe(ctx: Context) -> dict:
    expected = sources.source_fingerprint()
    sources.create_pg_table(C.DST_DB, C.TABLE)
    # --batch escapes tab, newline and backslash as PostgreSQL's text COPY expects, but writes
    # NULL as the bare word NULL (not \N): COPY is told so. A text value 'NULL' would turn into
    # NULL on the way; bench_rows has none, and the landed non-NULL count is checked.
    select = f"SET time_zone = '+00:00'; SELECT {COLUMNS} FROM {C.TABLE}"
    out = _quote(C.mariadb_cmd(C.SRC_DB) + ["--quick", "--batch", "--skip-column-names", "-e", select])
    into = _quote(C.psql_cmd(C.DST_DB) + ["-c", f"COPY {C.TABLE} ({COLUMNS}) FROM STDIN (FORMAT text, NULL 'NULL')"])
    result = run_tool(f"{out} | {into}", shell=True)
    check_landed(_landed_pg(), expected, "mariadb | psql pipe")
    return {"rows": ctx.rows, **result}


# --- (4) sling, PG->PG and MySQL->PG -------------------------------------------------------

def _sling_bin() -> str:
    """The binary the sling-linux-amd64 wheel carries (the `sling` wheel itself downloads one at import)."""
    try:
        import sling_linux_amd64
    except ImportError:
        raise Skip("sling-linux-amd64 is not installed (install the project's bench extra)") from None
    return sling_linux_amd64.SLING_BIN


def _sling_available() -> str | None:
    try:
        binary = _sling_bin()
        subprocess.run([binary, "--version"], check=True, capture_output=True, timeout=60, env=C.tool_env())
    except Skip as exc:
        return str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the sling binary does not run: {exc}"
    return None


def _sling(source_url: str):
    def run(ctx: Context) -> dict:
        expected = sources.source_fingerprint()
        sources.create_pg_table(C.DST_DB, C.TABLE)  # with the primary key; sling truncates and fills it
        env = C.tool_env(BENCH_SRC=source_url, BENCH_DST=C.PG_DST_URL + "?sslmode=disable",
                         SLING_HOME_DIR=str(ctx.workdir / "sling"))
        if source_url.startswith("postgresql"):
            env["BENCH_SRC"] += "?sslmode=disable"
            stream = f"public.{C.TABLE}"
        else:
            stream = f"{C.SRC_DB}.{C.TABLE}"
        cmd = [_sling_bin(), "run", "--src-conn", "BENCH_SRC", "--src-stream", stream,
               "--tgt-conn", "BENCH_DST", "--tgt-object", f"public.{C.TABLE}", "--mode", "truncate"]
        if not source_url.startswith("postgresql"):
            cmd += ["--columns", '{"active": "bool"}']  # sling reads tinyint(1) as smallint
        with open(ctx.workdir / "sling.log", "w") as log:
            result = run_tool(cmd, env=env, log=log)
        check_landed(_landed_pg(), expected, "sling")
        return {"rows": ctx.rows, **result}
    return run


# --- (5) dlt, pyarrow backend, CSV loader, PG->PG ------------------------------------------

def _dlt_available() -> str | None:
    for mod in ("dlt", "psycopg2", "sqlalchemy"):
        if not importlib.util.find_spec(mod):
            return f"{mod} is not installed (install the project's bench extra: dlt[postgres])"
    return None


def dlt_pg_pg(ctx: Context) -> dict:
    import os
    os.environ.update({"DLT_DATA_DIR": str(ctx.workdir / "dlt"), "RUNTIME__DLTHUB_TELEMETRY": "false",
                       # dlt insists on a password; the local server's trust auth ignores it
                       "DESTINATION__POSTGRES__CREDENTIALS__PASSWORD": "unused",
                       "SOURCES__SQL_DATABASE__CREDENTIALS__PASSWORD": "unused",
                       # the source table is read in 100k-row Arrow batches, loaded as CSV via COPY
                       "DATA_WRITER__BUFFER_MAX_ITEMS": "100000", "DATA_WRITER__FILE_MAX_ITEMS": "250000",
                       "LOAD__WORKERS": "4", "NORMALIZE__WORKERS": "1"})
    import dlt
    from dlt.sources.sql_database import sql_table
    expected = sources.source_fingerprint()
    src = C.PG_SRC_URL.replace("postgresql://", "postgresql+psycopg2://")
    resource = sql_table(credentials=src, table=C.TABLE, backend="pyarrow", chunk_size=100_000,
                         reflection_level="full_with_precision")
    pipeline = dlt.pipeline(pipeline_name=f"bench_{ctx.run}", pipelines_dir=str(ctx.workdir / "dlt" / "pipelines"),
                            destination=dlt.destinations.postgres(credentials=C.PG_DST_URL), dataset_name="dlt_bench")
    with Sampler() as s:
        started = time.perf_counter()
        info = pipeline.run(resource, loader_file_format="csv", write_disposition="replace")
        wall = time.perf_counter() - started
    info.raise_on_failed_jobs()
    check_landed(_landed_pg(C.TABLE, "dlt_bench"), expected, "dlt")
    steps = {st.step: round((st.finished_at - st.started_at).total_seconds(), 2)
             for st in pipeline.last_trace.steps if st.finished_at and st.started_at}
    return {"rows": ctx.rows, "wall_s": wall, "peak_rss_mb": self_maxrss_mb(), "rss_basis": "self",
            "sampled_peak_self_mb": mb(s.peak_self), "subprocess_peak_mb": mb(s.peak_children), "steps_s": steps}


# --- (6) pandas read_sql / to_sql, PG->PG ----------------------------------------------------

def pandas_pg_pg(ctx: Context) -> dict:
    import pandas as pd
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import JSONB
    limit = min(ctx.rows, PANDAS_MAX_ROWS)
    sources.create_pg_table(C.DST_DB, C.TABLE)
    src = sa.create_engine(C.PG_SRC_URL.replace("postgresql://", "postgresql+psycopg://"))
    dst = sa.create_engine(C.PG_DST_URL.replace("postgresql://", "postgresql+psycopg://"))
    with Sampler() as s:
        started = time.perf_counter()
        frame = pd.read_sql(sa.text(f"SELECT * FROM {C.TABLE} WHERE id <= :n ORDER BY id"), src, params={"n": limit})
        frame.to_sql(C.TABLE, dst, if_exists="append", index=False, chunksize=10_000, dtype={"attrs": JSONB})
        wall = time.perf_counter() - started
    landed = _landed_pg()
    if landed["rows"] != limit:
        raise RuntimeError(f"pandas: destination holds {landed['rows']} rows, expected {limit}")
    return {"rows": limit, "wall_s": wall, "peak_rss_mb": self_maxrss_mb(), "rss_basis": "self",
            "sampled_peak_self_mb": mb(s.peak_self), "subset_of": ctx.rows}


# --- (7) pgloader, MySQL->PG -------------------------------------------------------------------

PGLOADER = f"""LOAD DATABASE
    FROM mysql://{C.MY_USER}@{C.MY_HOST}:{C.MY_PORT}/{C.SRC_DB}
    INTO postgresql://{C.PG_USER}@{C.PG_HOST}:{C.PG_PORT}/{C.DST_DB}
  WITH include drop, create tables, create indexes, reset sequences, foreign keys
  INCLUDING ONLY TABLE NAMES MATCHING '{C.TABLE}'
  ALTER SCHEMA '{C.SRC_DB}' RENAME TO 'public';
"""


def pgloader(ctx: Context) -> dict:
    expected = sources.source_fingerprint()
    script = ctx.workdir / "bench.load"
    script.write_text(PGLOADER)
    cmd = ["pgloader", "--no-ssl-cert-verification", "--root-dir", str(ctx.workdir / "pgloader"), str(script)]
    with open(ctx.workdir / "pgloader.log", "w") as log:
        result = run_tool(cmd, log=log)
    check_landed(_landed_pg(), expected, "pgloader")
    return {"rows": ctx.rows, **result}


def measurements() -> list[Measurement]:
    A = "anchor"
    return [
        Measurement("psql_pipe", "PG->PG", A, "psql binary COPY pipe", psql_pipe, lambda: _which("psql")),
        Measurement("sling_pg_pg", "PG->PG", A, "sling", _sling(C.PG_SRC_URL), _sling_available),
        Measurement("dlt_pg_pg", "PG->PG", A, "dlt (pyarrow, csv)", dlt_pg_pg, _dlt_available),
        Measurement("pandas_pg_pg", "PG->PG", A, "pandas read_sql/to_sql", pandas_pg_pg,
                    note=f"first {PANDAS_MAX_ROWS:,} rows only; rows/s is for those"),
        Measurement("chdb_postgresql", "PG->CH", A, "chdb INSERT SELECT postgresql()", chdb_postgresql,
                    lambda: None if importlib.util.find_spec("chdb") else "the chdb module is not installed"),
        Measurement("pgloader", "MySQL->PG", A, "pgloader", pgloader, lambda: _which("pgloader") and
                    "pgloader not on PATH (apt-get install -y pgloader)", needs_mariadb=True),
        Measurement("mariadb_pipe", "MySQL->PG", A, "mariadb --batch | psql COPY", mariadb_pipe,
                    lambda: _which("mariadb", "psql"), needs_mariadb=True),
        Measurement("sling_mysql_pg", "MySQL->PG", A, "sling", _sling(C.MY_SRC_URL), _sling_available,
                    needs_mariadb=True),
    ]
