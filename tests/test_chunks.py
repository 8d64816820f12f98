"""How a table is split into chunks: by ranges of its primary key's leading integer column (else one chunk)."""
from __future__ import annotations

from tasks.plan import key_chunks
from tests.helpers import open_url


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
    import psycopg
    from flows.migrate_tables import migrate_tables
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


def test_a_table_keyed_by_text_is_one_chunk_and_the_log_says_so(sqlite_db, caplog):
    from flows.migrate_tables import migrate_tables
    source, dest = sqlite_db(), sqlite_db()
    conn = open_url(source)
    try:
        conn.execute("CREATE TABLE codes (code TEXT PRIMARY KEY, n INTEGER)")
        conn.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) "
                     "INSERT INTO codes SELECT 'c' || i, i FROM s")
    finally:
        conn.close()
    report = migrate_tables(source=source, destination=dest, tables=["codes"], chunk_rows=10)
    assert report["rows"] == 50 and report["verdict"] == "verified"
    assert "Table codes: 1 of 1 chunk(s) copied" in caplog.text
    assert "codes: its primary key does not begin with an integer column" in caplog.text
