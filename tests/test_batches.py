"""How batches move in and out of the engines: MySQL reads a key range in pages (connectorx reads
ahead without limit), PostgreSQL writes a stream of batches as one COPY. A user sees the same thing
either way: every row arrives exactly once, and a bad value leaves nothing of its COPY behind."""
from __future__ import annotations

import datetime as dt
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
