"""How a table is split into chunks: by ranges of its primary key's leading integer column, or of its text
leading column where both engines compare text byte by byte; else one chunk."""
from __future__ import annotations

import psycopg
import pytest

from connectors.base import Column, KeyRange, MigrationError, TableSchema
from flows.migrate_tables import migrate_tables
from tasks.plan import key_chunks
from tests.conftest import make_endpoint
from tests.helpers import create_table, execute_sql, insert_rows, open_url, read_rows, snapshot


def test_clickhouse_key_order_is_the_sorting_key_order(clickhouse_url):
    """Columns (id, tenant) sorted by (tenant, id): chunks split on tenant, the column the parts are sorted by."""
    conn = open_url(clickhouse_url)
    try:
        conn.execute("CREATE TABLE events (id Int64, tenant Int32, note String) ENGINE = MergeTree ORDER BY (tenant, id)")
        conn.execute("INSERT INTO events SELECT number, number % 10, 'n' FROM numbers(1000)")
        schema = conn.describe("events")
        chunks = key_chunks(conn, schema, 200)
    finally:
        conn.close()
    assert schema.primary_key == ("tenant", "id")
    assert len(chunks) == 5 and {c.key for c in chunks} == {"tenant"}


def test_names_with_percent_signs_survive_chunked_mysql_reads(postgres_url, mysql_url, sqlite_url):
    """Chunk ranges are bound as parameters; a % in a table or key name is not a placeholder."""
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute('CREATE TABLE "rate%s" ("k%" bigint PRIMARY KEY, "v%s" text)')
        c.execute('INSERT INTO "rate%s" SELECT g, \'v\' || g FROM generate_series(1, 50) g')
    into_mysql = migrate_tables(source=postgres_url, destination=mysql_url, tables=["rate%s"], chunk_rows=10)
    back_out = migrate_tables(source=mysql_url, destination=sqlite_url, tables=["rate%s"], chunk_rows=10)
    assert into_mysql["rows"] == back_out["rows"] == 50 and back_out["verdict"] == "verified"
    conn = open_url(sqlite_url)
    try:
        assert conn.query('SELECT count(*), sum("k%"), max("v%s") FROM "rate%s"') == [(50, 1275, "v9")]
    finally:
        conn.close()


# keys whose order differs between byte order and a language's: case, accents, emoji, blanks, ""
PREFIXES = ["a", "B", "é", "Z", "ä", "😀", " ", "a b", "A"]
CODES = TableSchema("codes", (Column("code", "string", False), Column("n", "int64")), ("code",))


def _code_rows(rows: int = 2000) -> list[dict]:
    return [{"code": f"{PREFIXES[i % len(PREFIXES)]}{i}", "n": i} for i in range(rows)] + [{"code": "", "n": -1}]


@pytest.mark.parametrize("src,dst", [("postgres", "clickhouse"), ("sqlite", "sqlite"), ("clickhouse", "sqlite"),
                                     ("sqlite", "clickhouse"), ("sqlite", "mysql"), ("mysql", "clickhouse"),
                                     ("sqlite", "postgres")])
def test_a_table_keyed_by_text_both_engines_compare_as_bytes_moves_in_chunks(request, caplog, src, dst):
    source, destination = make_endpoint(request, src), make_endpoint(request, dst)
    if src == "postgres":
        execute_sql(source, 'CREATE TABLE codes (code text COLLATE "C" PRIMARY KEY, n bigint)')
        insert_rows(source, CODES, _code_rows())
    else:
        create_table(source, CODES, _code_rows())

    report = migrate_tables(source=source, destination=destination, tables=["codes"], chunk_rows=300)

    assert report["rows"] == 2001 and report["verdict"] == "verified"
    chunks = 7 if dst != "postgres" or _collates_bytewise(destination) else 1
    assert f"Table codes: {chunks} of {chunks} chunk(s) copied" in caplog.text
    assert read_rows(destination, CODES) == read_rows(source, CODES)


def test_a_table_keyed_by_uuid_moves_in_chunks_between_postgresql_servers(postgres_db, caplog):
    source, destination = postgres_db(), postgres_db()
    execute_sql(source, "CREATE TABLE tokens (id uuid PRIMARY KEY, n int)",
             "INSERT INTO tokens SELECT md5(g::text)::uuid, g FROM generate_series(1, 1000) g")
    report = migrate_tables(source=source, destination=destination, tables=["tokens"], chunk_rows=200)
    assert report["rows"] == 1000 and report["verdict"] == "verified"
    assert "Table tokens: 5 of 5 chunk(s) copied" in caplog.text
    with psycopg.connect(destination) as c:
        assert c.execute("SELECT count(DISTINCT id), sum(n) FROM tokens").fetchone() == (1000, 500500)


def test_incremental_runs_by_text_key_chunks_move_only_the_changed_rows(sqlite_db):
    source, destination = sqlite_db(), sqlite_db()
    schema = TableSchema("codes", CODES.columns + (Column("version", "int64"),), ("code",))
    rows = [{"code": f"{PREFIXES[i % len(PREFIXES)]}{i}", "n": i, "version": 1} for i in range(1000)]
    create_table(source, schema, rows)
    run = dict(source=source, destination=destination, tables=["codes"], mode="incremental",
               watermark_column="version", chunk_rows=150)
    assert migrate_tables(**run)["rows"] == 1000
    changed = [r | {"n": -r["n"], "version": 2} if r["n"] % 97 == 0 else r for r in rows]
    create_table(source, schema, changed)

    second = migrate_tables(**run)

    assert second["rows"] == len([r for r in rows if r["n"] % 97 == 0])
    assert read_rows(destination, schema) == read_rows(source, schema)


@pytest.mark.parametrize("src", ["mysql", "sqlite"])
def test_a_text_key_one_side_orders_by_collation_is_one_chunk_and_the_log_says_so(request, sqlite_db, caplog, src):
    """A MySQL column of its default collation (case and accents ignored), a NOCASE SQLite column:
    a range of keys would select other rows on the other side, so the table is one chunk."""
    source = make_endpoint(request, src)
    collated = "VARCHAR(20) COLLATE utf8mb4_general_ci" if src == "mysql" else "TEXT COLLATE NOCASE"
    execute_sql(source, f"CREATE TABLE codes (code {collated} PRIMARY KEY, n INTEGER)")
    insert_rows(source, CODES, [{"code": f"c{i}", "n": i} for i in range(2000)])
    report = migrate_tables(source=source, destination=sqlite_db(), tables=["codes"], chunk_rows=300)
    assert report["verdict"] == "verified" and report["rows"] == 2000
    assert "Table codes: 1 of 1 chunk(s) copied" in caplog.text
    assert "codes: its primary key does not begin with an integer column" in caplog.text


def _collates_bytewise(postgres_url: str) -> bool:
    """Whether the database's own default collation sorts text as bytes (a new table's text does)."""
    with psycopg.connect(postgres_url) as c:
        locale, provider = c.execute("SELECT datcollate, datlocprovider FROM pg_database "
                                     "WHERE datname = current_database()").fetchone()
    return provider == "c" and locale in ("C", "POSIX", "C.UTF-8", "C.utf8")


def test_text_keys_alike_but_for_case_or_trailing_blanks_stay_apart_in_mysql(sqlite_url, mysql_url):
    keys = ["a", "A", "a ", "b", "é", "e"]
    create_table(sqlite_url, CODES, [{"code": k, "n": i} for i, k in enumerate(keys)])
    report = migrate_tables(source=sqlite_url, destination=mysql_url, tables=["codes"])
    assert report["rows"] == len(keys) and report["verdict"] == "verified"
    assert read_rows(mysql_url, CODES) == read_rows(sqlite_url, CODES)


def test_a_text_key_longer_than_mysql_can_index_fails_naming_the_column(sqlite_db, mysql_url):
    source = sqlite_db()
    create_table(source, CODES, [{"code": "k" * 800, "n": 1}, {"code": "short", "n": 2}])
    with pytest.raises(MigrationError, match="too long for column 'code'"):
        migrate_tables(source=source, destination=mysql_url, tables=["codes"])
    assert snapshot(mysql_url) == {}


def test_a_composite_key_of_an_integer_and_text_fits_mysqls_key_limit(sqlite_url, mysql_url):
    schema = TableSchema("lines", (Column("tenant", "int64", False), Column("name", "string", False),
                                   Column("n", "int64")), ("tenant", "name"))
    create_table(sqlite_url, schema, [{"tenant": t, "name": f"line {i}", "n": i} for t in (1, 2) for i in range(5)])
    report = migrate_tables(source=sqlite_url, destination=mysql_url, tables=["lines"])
    assert report["rows"] == 10 and report["verdict"] == "verified"


def test_keys_an_engine_sorts_otherwise_than_by_their_text_are_not_split(sqlite_url):
    """A safety net behind orders_bytewise: chunk starts must rise in code-point order, else one chunk."""
    execute_sql(sqlite_url, "CREATE TABLE codes (code TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER)")
    insert_rows(sqlite_url, CODES, [{"code": f"{'aB'[i % 2]}{i:04}", "n": i} for i in range(1000)])
    conn = open_url(sqlite_url)
    try:
        chunks = key_chunks(conn, conn.describe("codes"), 100, text_key="code")
    finally:
        conn.close()
    assert chunks == [KeyRange()]
