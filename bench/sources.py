"""The benchmark's data: `bench_rows` in PostgreSQL and MariaDB, built fast, reused while it matches.

PostgreSQL builds it with one INSERT ... SELECT over generate_series. MariaDB gets the same
rows through `psql COPY TO` (text format) -> a file -> `LOAD DATA LOCAL INFILE`; PostgreSQL's
text format and LOAD DATA's defaults agree on tabs, newlines, backslashes and \\N for NULL.

A comment on each table records the row count and DATA_VERSION, so a later run reuses the
table when both match and rebuilds it otherwise (or always, with --rebuild).
"""
from __future__ import annotations

import subprocess
import time

import psycopg
import pymysql

from bench import config as C

DATA_VERSION = 1

# Mixed types: bigint key, integer, short text, numeric(12,2), timestamptz, boolean,
# text that is NULL in 30% of rows (and now and then holds a tab, newline or backslash), small jsonb.
PG_DDL = """
CREATE TABLE {name} (
    id          bigint PRIMARY KEY,
    qty         integer,
    code        text,
    amount      numeric(12,2),
    created_at  timestamptz,
    active      boolean,
    note        text,
    attrs       jsonb
)"""
PG_FILL = """
INSERT INTO bench_rows
SELECT i,
       ((i * 7919) % 100000)::int,
       'C' || lpad((i % 50000)::text, 6, '0'),
       round((((i * 37) % 10000000) - 2500000) / 100.0, 2),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' + (i % 1000) * interval '1 microsecond',
       i % 3 <> 0,
       CASE WHEN i % 10 < 3 THEN NULL
            WHEN i % 997 = 0 THEN E'tab\\there, line\\nbreak, back\\\\slash, ''quote'' ' || i
            ELSE 'note ' || md5(i::text) END,
       jsonb_build_object('k', i % 10, 'tag', 't' || (i % 7), 'ok', i % 2 = 0)
FROM generate_series(1::bigint, {rows}::bigint) AS i
"""
MY_DDL = """
CREATE TABLE {name} (
    id          BIGINT NOT NULL PRIMARY KEY,
    qty         INT,
    code        VARCHAR(16),
    amount      DECIMAL(12,2),
    created_at  TIMESTAMP(6) NULL DEFAULT NULL,
    active      BOOLEAN,
    note        TEXT,
    attrs       JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
# the columns as the MariaDB dump is written: timestamps as UTC wall time, booleans as 0/1
PG_DUMP_SELECT = ("SELECT id, qty, code, amount, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
                  "active::int, note, attrs::text FROM bench_rows ORDER BY id")


def marker(rows: int) -> str:
    return f"ma_bench v{DATA_VERSION} rows={rows}"


def pg_connect(db: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=C.PG_HOST, port=C.PG_PORT, user=C.PG_USER, dbname=db, autocommit=True)


def my_connect(db: str | None = None) -> pymysql.Connection:
    return pymysql.connect(host=C.MY_HOST, port=C.MY_PORT, user=C.MY_USER, password="", database=db,
                           autocommit=True, local_infile=True, init_command="SET time_zone = '+00:00'")


def ensure_pg_database(name: str) -> None:
    with pg_connect() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


def reset_pg_destination() -> None:
    """A fresh, empty destination database; then a checkpoint so no run pays for the last one's dirty pages."""
    with pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{C.DST_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{C.DST_DB}"')
        admin.execute("CHECKPOINT")


def create_pg_table(db: str, name: str) -> None:
    """An empty table shaped like the source (same primary key), for the anchors to load into."""
    with pg_connect(db) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        conn.execute(PG_DDL.format(name=f'"{name}"'))


def _pg_table_marker(conn, name: str) -> str | None:
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [name]).fetchone()
    return row[0] if row else None


def _my_table_marker(conn, name: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute("SELECT table_comment FROM information_schema.tables WHERE table_schema = DATABASE() "
                    "AND table_name = %s", [name])
        row = cur.fetchone()
    return row[0] if row else None


def build_postgres(rows: int, rebuild: bool, log=print) -> bool:
    """bench_rows and bench_tiny in PostgreSQL ma_bench. Returns True when it (re)built them."""
    ensure_pg_database(C.SRC_DB)
    with pg_connect(C.SRC_DB) as conn:
        if not rebuild and _pg_table_marker(conn, C.TABLE) == marker(rows) and _pg_table_marker(conn, C.TINY) == marker(rows):
            log(f"PostgreSQL {C.SRC_DB}.{C.TABLE}: reusing {rows:,} rows")
            return False
        started = time.perf_counter()
        conn.execute(f"DROP TABLE IF EXISTS {C.TABLE}, {C.TINY}")
        conn.execute(PG_DDL.format(name=C.TABLE))
        conn.execute(PG_FILL.format(rows=int(rows)))
        conn.execute(f"CREATE TABLE {C.TINY} (LIKE {C.TABLE} INCLUDING ALL)")
        conn.execute(f"INSERT INTO {C.TINY} SELECT * FROM {C.TABLE} WHERE id <= %s", [C.TINY_ROWS])
        # set hint bits and the visibility map now, so the first timed reader does not pay for it
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {C.TABLE}")
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {C.TINY}")
        for t in (C.TABLE, C.TINY):
            conn.execute(f"COMMENT ON TABLE {t} IS '{marker(rows)}'")
        log(f"PostgreSQL {C.SRC_DB}.{C.TABLE}: built {rows:,} rows in {time.perf_counter() - started:.1f} s")
    return True


def build_mariadb(rows: int, rebuild: bool, log=print) -> bool:
    """The same rows in MariaDB ma_bench, loaded from a PostgreSQL text-format dump."""
    with my_connect() as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{C.SRC_DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with my_connect(C.SRC_DB) as conn:
        if not rebuild and _my_table_marker(conn, C.TABLE) == marker(rows) and _my_table_marker(conn, C.TINY) == marker(rows):
            log(f"MariaDB {C.SRC_DB}.{C.TABLE}: reusing {rows:,} rows")
            return False
        started = time.perf_counter()
        C.STATE.mkdir(parents=True, exist_ok=True)
        dump = C.STATE / "bench_rows.tsv"
        with open(dump, "wb") as out:
            subprocess.run(C.psql_cmd(C.SRC_DB) + ["-c", f"COPY ({PG_DUMP_SELECT}) TO STDOUT"],
                           stdout=out, check=True, env=C.tool_env())
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {C.TABLE}, {C.TINY}")
            cur.execute(MY_DDL.format(name=C.TABLE))
            cur.execute("SET unique_checks = 0")
            cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE {C.TABLE} CHARACTER SET utf8mb4 "
                        r"FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'", [str(dump)])
            cur.execute("SET unique_checks = 1")
            cur.execute(f"CREATE TABLE {C.TINY} LIKE {C.TABLE}")
            cur.execute(f"INSERT INTO {C.TINY} SELECT * FROM {C.TABLE} WHERE id <= %s", [C.TINY_ROWS])
            cur.execute(f"ANALYZE TABLE {C.TABLE}, {C.TINY}")
            cur.fetchall()
            cur.execute(f"SELECT count(*), count(note) FROM {C.TABLE}")
            got, notes = cur.fetchone()
            if got != rows:
                raise RuntimeError(f"MariaDB {C.TABLE}: loaded {got} rows, expected {rows}")
            for t in (C.TABLE, C.TINY):
                cur.execute(f"ALTER TABLE {t} COMMENT = %s", [marker(rows)])
        dump.unlink()
        log(f"MariaDB {C.SRC_DB}.{C.TABLE}: built {rows:,} rows ({notes:,} non-NULL notes) "
            f"in {time.perf_counter() - started:.1f} s")
    return True


def source_fingerprint() -> dict:
    """What every destination must hold after a copy: count, non-NULL notes, sum of keys."""
    with pg_connect(C.SRC_DB) as conn:
        n, notes, keys = conn.execute(f"SELECT count(*), count(note), sum(id) FROM {C.TABLE}").fetchone()
    return {"rows": int(n), "notes": int(notes), "key_sum": int(keys)}


def pg_fingerprint(db: str, table: str, schema: str = "public") -> dict:
    with pg_connect(db) as conn:
        n, notes, keys = conn.execute(f'SELECT count(*), count(note), sum(id) FROM "{schema}"."{table}"').fetchone()
    return {"rows": int(n), "notes": int(notes), "key_sum": int(keys or 0)}


def build(rows: int, rebuild: bool = False, need_mariadb: bool = True, log=print) -> None:
    changed = build_postgres(rows, rebuild, log)
    if need_mariadb:
        build_mariadb(rows, rebuild or changed, log)
    ensure_pg_database(C.DST_DB)
