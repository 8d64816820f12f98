"""Planning: what each table becomes in the destination, which casts apply, how it is chunked.

Everything here runs before a single row is written, so type problems stop the run
with the destination untouched.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

from connectors.base import (
    Column, Connector, KeyRange, LossyConversion, MigrationError, RowFilter, TableSchema,
)

# name -> (does it apply to this column, what the column becomes)
LOSSY_CASTS = {
    "decimal_as_text": (lambda c: c.type == "decimal", lambda c: Column(c.name, "string", c.nullable)),
    "uint64_as_decimal": (lambda c: c.type == "uint64", lambda c: Column(c.name, "decimal", c.nullable, 20, 0)),
    "float_as_text": (lambda c: c.type in ("float32", "float64"), lambda c: Column(c.name, "string", c.nullable)),
}


@dataclass
class TablePlan:
    table: str  # source table
    target: str  # destination table
    source_schema: TableSchema
    dest_schema: TableSchema  # named after the staging table
    staging: str
    backup: str | None  # where the replaced target goes (full) or prior rows go (incremental)
    mode: str
    target_existed: bool
    chunks: list[KeyRange] = field(default_factory=list)
    watermark: str | None = None
    watermark_after: object | None = None
    watermark_upto: object | None = None
    casts: dict[str, str] = field(default_factory=dict)  # column -> cast applied
    # PostgreSQL to PostgreSQL with identical column types: rows move as undecoded binary COPY and
    # are verified by a server-side hash (decided once staging exists, see create_staging)
    raw_stream: bool = False
    # the destination hashes staged rows where they are (Connector.hashes_in_place) and the copy
    # hashes what it extracted the same way, so verify reads nothing back
    hashed_in_place: bool = False

    def row_filter(self, chunk: KeyRange) -> RowFilter:
        """The rows of `chunk` this run moves: those changed since the last run's watermark when there
        is one, else all of them (a full copy must not lose rows whose watermark is NULL)."""
        if self.watermark_after is None:
            return RowFilter(chunk)
        return RowFilter(chunk, self.watermark, self.watermark_after, self.watermark_upto)

    def without_chunks(self) -> "TablePlan":
        """The plan as chunk tasks get it: Prefect walks every parameter of every task run, and a
        list of all chunks in each would make that quadratic in the number of chunks."""
        return replace(self, chunks=[])


def work_table_name(table: str, role: str, run_id: str) -> str:
    """staging/backup names: recognisable, unique per run, within every engine's 63-char limit. A
    name cut short carries a hash of the whole name, so two long names alike at the start differ."""
    suffix = f"__{role}_{run_id.replace('-', '')[:8]}"
    if len(table) + len(suffix) <= 63:
        return table + suffix
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: 63 - len(suffix) - 9]}_{digest}{suffix}"


def destination_schema(schema: TableSchema, dest: Connector, casts: list[str]) -> tuple[TableSchema, dict[str, str]]:
    """The source schema as the destination will hold it; raises LossyConversion naming the column."""
    unknown = set(casts) - set(LOSSY_CASTS)
    if unknown:
        raise MigrationError(f"unknown lossy cast(s) {sorted(unknown)}; available: {sorted(LOSSY_CASTS)}")
    columns, applied = [], {}
    for col in schema.columns:
        try:
            dest.column_ddl(col)
        except LossyConversion as exc:
            col, name = _cast(col, casts, exc)
            applied[col.name] = name
            dest.column_ddl(col)
        columns.append(col)
    return replace(schema, columns=tuple(columns)), applied


def _cast(col: Column, casts: list[str], exc: LossyConversion) -> tuple[Column, str]:
    for name in casts:
        applies, becomes = LOSSY_CASTS[name]
        if applies(col):
            return becomes(col), name
    raise LossyConversion(f"{exc} (table column {col.name!r}, {col.describe()})") from None


def check_compatible(source: TableSchema, existing: TableSchema, target: str) -> None:
    """An existing destination table is reused only when it has exactly the source's columns."""
    want, have = source.column_names, existing.column_names
    if sorted(want) != sorted(have):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        raise MigrationError(
            f"destination table {target!r} exists with different columns (missing {missing}, extra {extra}); "
            f"drop or rename it, or migrate into another table name")


def key_chunks(conn: Connector, schema: TableSchema, chunk_rows: int, text_key: str | None = None) -> list[KeyRange]:
    """Ranges of the primary key's leading integer column; else of `text_key` (see bytewise_key); else one chunk."""
    key = schema.chunk_key
    if key is None:
        return _text_key_chunks(conn, schema, text_key, chunk_rows) if text_key else [KeyRange()]
    lo, hi, count = conn.key_bounds(schema.name, key)
    if count == 0 or lo is None:
        return [KeyRange()]
    n = max(1, math.ceil(count / chunk_rows))
    step = max(1, math.ceil((hi - lo + 1) / n))
    starts = list(range(lo, hi + 1, step))
    # the first and last chunks are open-ended so rows outside today's bounds are not missed; the
    # first also takes the rows whose key is NULL, where the engine allows them (SQLite)
    nulls = schema.column(key).nullable
    return [KeyRange(key, None if i == 0 else b, None if i == len(starts) - 1 else b + step - 1, nulls and i == 0)
            for i, b in enumerate(starts)]


def bytewise_key(source: Connector, dest: Connector, schema: TableSchema, dest_schema: TableSchema,
                 existing: TableSchema | None) -> str | None:
    """The primary key's leading column when it is text (or a UUID) that the source and the destination
    both compare byte by byte: a range of it then selects the same rows on both sides (an engine's
    collation would not), so the copy, a retry's clean-up and verify can all work by chunk."""
    if not schema.primary_key or schema.chunk_key:
        return None
    key = schema.primary_key[0]
    landing = existing or dest_schema
    if source.orders_bytewise(schema.name, schema.column(key)) and \
            dest.orders_bytewise(existing and existing.name, landing.column(key)):
        return key
    return None


def _text_key_chunks(conn: Connector, schema: TableSchema, key: str, chunk_rows: int) -> list[KeyRange]:
    """[start, next start) for every chunk_rows-th key: chunks of even row counts however the keys spread."""
    starts = conn.key_starts(schema.name, key, chunk_rows)
    nulls = schema.column(key).nullable
    if any(a >= b for a, b in zip(starts, starts[1:])):
        return [KeyRange()]  # sorted otherwise than by code point (UTF-8 byte order, as Python compares str)
    if len(starts) < 2:
        return [KeyRange(key, nulls=nulls)]
    last = len(starts) - 1
    return [KeyRange(key, None if i == 0 else b, None if i == last else starts[i + 1], nulls and i == 0, hi_excluded=True)
            for i, b in enumerate(starts)]
