"""The run ledger: one small table in each destination recording what every run changed.

It is what makes a finished run reversible (which backup or staging table holds the
prior rows) and where incremental runs keep their committed watermark, next to the data.
"""
from __future__ import annotations

import datetime as dt
import json
import struct
import weakref
from decimal import Decimal

import pyarrow as pa

from connectors.base import Column, Connector, MigrationError, RowFilter, TableSchema

LEDGER = "_migration_assistant_runs"
LEDGER_SCHEMA = TableSchema(LEDGER, (
    Column("run_id", "string", False), Column("table_name", "string", False), Column("mode", "string", False),
    Column("target_existed", "bool"), Column("backup", "string"), Column("staging", "string"),
    Column("deleted", "string"), Column("key_column", "string"), Column("watermark_column", "string"),
    Column("watermark", "string"), Column("status", "string", False), Column("recorded_at", "timestamptz", False),
    Column("staging_id", "string"),  # Connector.table_id of the staging table a full run swaps in
))
# a table's records in one run: "publishing" before its publish begins, "published" once it is done,
# "rolled_back" once undone; the furthest one reached (the later of two alike) tells its state
_PROGRESS = {"publishing": 0, "published": 1, "rolled_back": 2}


def ensure(conn: Connector) -> None:
    """The ledger exists, with every column of this release (a ledger of an earlier one gains them).
    Checked once per connection; another run doing the same at the same moment is no error."""
    if conn in _ensured:
        return
    try:
        if not conn.table_exists(LEDGER):
            conn.create_table(LEDGER_SCHEMA)
        for col in _missing_columns(conn):
            conn.add_column(LEDGER, col)
    except MigrationError:
        if not conn.table_exists(LEDGER) or _missing_columns(conn):
            raise
    _ensured.add(conn)


_ensured: "weakref.WeakSet[Connector]" = weakref.WeakSet()


def _missing_columns(conn: Connector) -> list[Column]:
    present = set(conn.describe(LEDGER).column_names)
    return [c for c in LEDGER_SCHEMA.columns if c.name not in present]


def record(conn: Connector, **fields) -> None:
    ensure(conn)
    fields.setdefault("recorded_at", dt.datetime.now(dt.timezone.utc))
    schema = _arrow_schema()
    row = [_single_value(fields.get(f.name), f.type) for f in schema]
    conn.write_batch(LEDGER_SCHEMA, pa.RecordBatch.from_arrays(row, schema=schema))


def records(conn: Connector, run_id: str | None = None) -> list[dict]:
    if not conn.table_exists(LEDGER):
        return []
    missing = {c.name for c in _missing_columns(conn)}  # a ledger of an earlier release: those read as NULL
    present = TableSchema(LEDGER, tuple(c for c in LEDGER_SCHEMA.columns if c.name not in missing))
    rows = [dict.fromkeys(missing) | r for b in conn.read_batches(present, RowFilter()) for r in b.to_pylist()]
    rows.sort(key=lambda r: r["recorded_at"])
    return [r for r in rows if run_id is None or r["run_id"] == run_id]


def published(conn: Connector, run_id: str) -> list[dict]:
    """The latest record of each table a run published, or began to publish ("publishing": it may
    have stopped halfway), and has not rolled back; in the order the run began them."""
    latest: dict[str, dict] = {}
    for r in records(conn, run_id):
        seen = latest.get(r["table_name"])
        if seen is None or _PROGRESS.get(r["status"], -1) >= _PROGRESS.get(seen["status"], -1):
            latest[r["table_name"]] = r
    return [r for r in latest.values() if r["status"] != "rolled_back"]


def published_later(conn: Connector, run_id: str) -> dict[str, str]:
    """Table -> the newest run that published it after `run_id` did and still stands, for each
    table `run_id` published."""
    rows = records(conn)
    undone = {(r["run_id"], r["table_name"]) for r in rows if r["status"] == "rolled_back"}
    later: dict[str, str] = {}
    for r in rows:  # in the order recorded
        if r["status"] == "rolled_back" or (r["run_id"], r["table_name"]) in undone:
            continue
        if r["run_id"] == run_id:
            later[r["table_name"]] = ""
        elif r["table_name"] in later:
            later[r["table_name"]] = r["run_id"]
    return {t: run for t, run in later.items() if run}


def last_watermark(conn: Connector, table: str, column: str):
    rows = records(conn)
    undone = {(r["run_id"], r["table_name"]) for r in rows if r["status"] == "rolled_back"}
    for r in reversed(rows):
        if (r["table_name"] == table and r["status"] == "published" and r["watermark_column"] == column
                and r["watermark"] is not None and (r["run_id"], table) not in undone):
            return decode_watermark(r["watermark"])
    return None


def encode_watermark(value) -> str | None:
    if value is None:
        return None
    kind = type(value).__name__
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return json.dumps({"type": kind, "value": text})


def decode_watermark(text: str):
    data = json.loads(text)
    kind, value = data["type"], data["value"]
    return {
        "datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat, "int": int,
        "Decimal": Decimal, "float": float,
    }.get(kind, str)(value)


def encode_keys(keys) -> str | None:
    """The primary-key columns an incremental run upserted by, as the ledger keeps them."""
    return json.dumps(list(keys)) if keys else None


def decode_keys(text: str) -> list[str]:
    """Also reads the single column name that runs before composite-key upserts recorded."""
    try:
        keys = json.loads(text)
    except ValueError:
        return [text]
    return keys if isinstance(keys, list) else [text]


def _single_value(value, type_: pa.DataType) -> pa.Array:
    """A one-value array of the ledger's types (text, boolean, timestamp), built from its buffers:
    pyarrow converts Python values only after importing pandas (50 MB and 0.8 s in every flow
    process), which nothing else on the copy path needs."""
    if value is None:
        return pa.nulls(1, type_)
    if pa.types.is_string(type_):
        data = str(value).encode()
        return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(struct.pack("<ii", 0, len(data))), pa.py_buffer(data)])
    if pa.types.is_boolean(type_):
        return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(bytes([bool(value)]))])
    micros = (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(struct.pack("<q", micros))])


def _arrow_schema() -> pa.Schema:
    from connectors.canonical import arrow_schema
    return arrow_schema(LEDGER_SCHEMA)
