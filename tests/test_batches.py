"""How batches move in and out of the engines: MySQL reads in primary-key pages (connectorx reads
ahead without limit), PostgreSQL writes a stream of batches as one COPY. A user sees the same thing
either way: every row arrives exactly once, and a bad value leaves nothing of its COPY behind."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.base import Column, KeyRange, LossyConversion, RowFilter, TableSchema, TransientError
from connectors.canonical import arrow_schema
from tests.helpers import create_table, open_url

ITEMS = TableSchema("items", (Column("id", "int64", False), Column("name", "string"), Column("seen", "timestamp")),
                    ("id",))


def _items(ids) -> list[dict]:
    return [{"id": i, "name": f"item {i}\twith a tab", "seen": None} for i in ids]


def test_mysql_range_read_in_pages_returns_every_row_once_in_bounded_batches(mysql_url):
    ids = [i * 3 for i in range(1, 10_001)]  # keys with gaps: pages continue after the last key read
    create_table(mysql_url, ITEMS, _items(ids))
    conn = open_url(mysql_url)
    try:
        batches = list(conn.read_batches(ITEMS, RowFilter(KeyRange("id", 30, 29_700)), 1024))
        whole = list(conn.read_batches(ITEMS, RowFilter(), 1024))  # no key range: one query
    finally:
        conn.close()
    read = [i for b in batches for i in b.column("id").to_pylist()]
    assert read == [i for i in ids if 30 <= i <= 29_700]  # each once, in key order, across pages
    assert max(b.num_rows for b in batches) <= 1024
    assert sorted(i for b in whole for i in b.column("id").to_pylist()) == ids
    assert batches[0].column("name")[0].as_py() == "item 30\twith a tab"


REGIONS = TableSchema("regions", (Column("region", "string", False, length=8), Column("seq", "int32", False),
                                   Column("note", "string")), ("region", "seq"))
EVENTS = TableSchema("events", (Column("at", "timestamptz", False), Column("price", "decimal", False, 12, 2),
                                Column("tag", "char", False, length=4), Column("n", "int64")), ("at", "price", "tag"))


def _read_keys(url: str, schema: TableSchema, batch_rows: int) -> tuple[list[tuple], int]:
    conn = open_url(url)
    try:
        batches = list(conn.read_batches(schema, RowFilter(), batch_rows))
    finally:
        conn.close()
    keys = [tuple(r[k] for k in schema.primary_key) for b in batches for r in b.to_pylist()]
    return keys, max(b.num_rows for b in batches)


def test_mysql_composite_and_text_keys_are_read_in_pages_every_row_once(mysql_url):
    """Keyset pages by a primary key of any pageable types: ties on the first key column span page
    boundaries, text keys hold quotes and non-ASCII, and every row still arrives exactly once."""
    regions = ["O'Hare", "Zürich", "a b", "a\\b", "北京"]
    create_table(mysql_url, REGIONS, [{"region": r, "seq": s, "note": f"{r}/{s}"}
                                      for s in range(2_500) for r in regions])
    start = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    create_table(mysql_url, EVENTS, [{"at": start + dt.timedelta(seconds=i // 40), "price": Decimal(f"{i % 8}.{i % 5}5"),
                                      "tag": f"t{i % 5}", "n": i} for i in range(10_000)])

    keys, largest = _read_keys(mysql_url, REGIONS, 1024)  # pages of 4 batches: 4,096 rows
    assert keys == sorted((r, s) for s in range(2_500) for r in regions) and largest <= 1024  # utf8mb4_bin order
    keys, largest = _read_keys(mysql_url, EVENTS, 1024)
    assert len(keys) == len(set(keys)) == 10_000 and keys == sorted(keys) and largest <= 1024


SLOW_READER = """
import sys, time
import psutil
from connectors.base import RowFilter
from tasks.memory import limit_malloc_arenas
from tests.helpers import open_url

limit_malloc_arenas()  # as the flow does
conn = open_url(sys.argv[1])
schema = conn.describe("wide")
me = psutil.Process()
before, peak, rows = me.memory_info().rss, 0, 0
for batch in conn.read_batches(schema, RowFilter()):
    rows += batch.num_rows
    time.sleep(0.03)  # a destination slower than the source
    peak = max(peak, me.memory_info().rss)
print(rows, (peak - before) >> 20)
"""


def test_mysql_table_with_a_composite_key_is_read_in_bounded_memory(mysql_url):
    """200 MB of rows keyed by (text, int), read by a slow consumer: the reader holds a page, not the table."""
    import subprocess
    import sys

    conn = open_url(mysql_url)
    try:
        conn.execute("CREATE TABLE digits (d INT PRIMARY KEY)")
        conn.execute("INSERT INTO digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)")
        conn.execute("CREATE TABLE wide (k VARCHAR(8), n INT, pad VARCHAR(2000), PRIMARY KEY (k, n))")
        conn.execute("INSERT INTO wide SELECT CONCAT('k', n % 7), n, REPEAT(CHAR(65 + n % 26), 2000) FROM "
                     "(SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n "
                     "FROM digits a, digits b, digits c, digits e, digits f) s")
        conn.execute("ANALYZE TABLE wide")
    finally:
        conn.close()
    done = subprocess.run([sys.executable, "-c", SLOW_READER, mysql_url], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, grew_mb = map(int, done.stdout.split())
    assert rows == 100_000
    assert grew_mb < 80, f"reading 200 MB grew the reader by {grew_mb} MB"


def test_mysql_table_keyed_by_an_enum_is_read_whole(mysql_url):
    """ENUM sorts by position but compares as text ('large' < 'small'): keyset pages would skip rows."""
    conn = open_url(mysql_url)
    try:
        conn.execute("CREATE TABLE sizes (size ENUM('small', 'medium', 'large'), i INT, PRIMARY KEY (size, i))")
        with conn.conn.cursor() as cur:
            cur.executemany("INSERT INTO sizes VALUES (%s, %s)", [(s, i) for s in ("small", "medium", "large")
                                                                  for i in range(3_000)])
        schema = conn.describe("sizes")
        rows = [(r["size"], r["i"]) for b in conn.read_batches(schema, RowFilter(), 1024) for r in b.to_pylist()]
    finally:
        conn.close()
    assert sorted(rows) == sorted((s, i) for s in ("small", "medium", "large") for i in range(3_000))


def _batches(schema: TableSchema, rows: list[dict], size: int):
    table = pa.Table.from_pylist(rows, schema=arrow_schema(schema))
    return table.to_batches(max_chunksize=size)


def test_postgres_writes_a_stream_of_batches_as_one_copy(postgres_url):
    create_table(postgres_url, ITEMS, [])
    conn = open_url(postgres_url)
    try:
        conn.write_batches(ITEMS, iter(_batches(ITEMS, _items(range(1, 5001)), 700)))
        assert conn.query("SELECT count(*), min(id), max(id), count(DISTINCT id) FROM items") == [(5000, 1, 5000, 5000)]
    finally:
        conn.close()


def test_postgres_bad_value_in_a_later_batch_leaves_nothing_of_the_stream(postgres_url):
    create_table(postgres_url, ITEMS, [])
    rows = _items(range(1, 3001))
    rows[2500]["name"] = "nul \x00 inside"  # PostgreSQL text cannot hold it: found before it is sent
    conn = open_url(postgres_url)
    try:
        with pytest.raises(LossyConversion, match="column 'name' holds a NUL"):
            conn.write_batches(ITEMS, iter(_batches(ITEMS, rows, 500)))
        assert conn.query("SELECT count(*) FROM items") == [(0,)]  # the first 2,500 rows went with the COPY
        conn.execute("SET lock_timeout = '5s'")
        conn.drop_table("items")  # the failed COPY holds no lock: a rollback can drop the staging table
    finally:
        conn.close()


def test_postgres_source_fault_mid_stream_keeps_its_kind(postgres_url):
    """A lost source connection while the COPY runs stays a transient fault (the chunk is retried)."""
    create_table(postgres_url, ITEMS, [])

    def failing():
        yield from _batches(ITEMS, _items(range(1, 1001)), 500)
        raise TransientError("source: reading items failed: connection reset")

    conn = open_url(postgres_url)
    try:
        with pytest.raises(TransientError, match="connection reset"):
            conn.write_batches(ITEMS, failing())
        assert conn.query("SELECT count(*) FROM items") == [(0,)]
        conn.write_batches(ITEMS, iter(_batches(ITEMS, _items(range(1, 11)), 5)))  # a retry loads afresh
        assert conn.query("SELECT count(*) FROM items") == [(10,)]
    finally:
        conn.close()


def test_postgres_empty_stream_writes_nothing(postgres_url):
    create_table(postgres_url, ITEMS, [])
    conn = open_url(postgres_url)
    try:
        conn.write_batches(ITEMS, iter(_batches(ITEMS, _items([]), 10)))
        conn.write_batch(ITEMS, pa.RecordBatch.from_pylist([], schema=arrow_schema(ITEMS)))
        assert conn.query("SELECT count(*) FROM items") == [(0,)]
    finally:
        conn.close()


PANDAS_FREE = """
import sys
from connectors.base import RowFilter
from connectors.canonical import Checksum
from tasks import state
from tests.helpers import open_url
from tests.test_batches import ITEMS

source, dest = open_url(sys.argv[1]), open_url(sys.argv[2])
extracted, landed = Checksum(), Checksum()
def counted(batches, checksum):
    for batch in batches:
        checksum.add(batch)
        yield batch
dest.write_batches(ITEMS, counted(source.read_batches(ITEMS, RowFilter(), 1024), extracted))
for _ in counted(dest.read_batches(ITEMS, RowFilter(), 1024), landed):
    pass
state.record(dest, run_id="r1", table_name="items", mode="full", target_existed=False, status="published")
assert landed == extracted and landed.rows == 3000, (landed, extracted)
print("pandas" in sys.modules)
"""


def test_copy_path_does_not_import_pandas(mysql_url, postgres_url):
    """pyarrow imports pandas (50 MB, 0.8 s) on the first Python value it converts: the copy path
    (read, conform, checksum, write, read back, ledger) converts none."""
    import subprocess
    import sys

    rows = _items(range(1, 3001))
    for i, row in enumerate(rows):
        row["seen"] = None if i % 3 else dt.datetime(2026, 1, 1, 12, 30) + dt.timedelta(microseconds=i)
    create_table(mysql_url, ITEMS, rows)
    create_table(postgres_url, ITEMS, [])
    done = subprocess.run([sys.executable, "-c", PANDAS_FREE, mysql_url, postgres_url], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
