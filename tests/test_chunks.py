"""How a table is split into chunks: by ranges of its primary key's leading integer column."""
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
