"""PostgreSQL's own hash functions, computed over Arrow arrays.

A PostgreSQL destination verifies a chunk by hashing the rows where they are, in SQL
(`checksum_sql`), instead of sending them back to us; `row_hashes` computes the same numbers
over the batches the copy extracted. Both sides hash each value with the function PostgreSQL
uses for its type (Bob Jenkins' lookup3, `hash_bytes_extended` and `hash_uint32_extended` in
src/common/hashfn.c), seeded with the column's position, and XOR a row's values together.

Text-like values are hashed as PostgreSQL prints them (`numeric` and `jsonb` through `::text`),
so a `jsonb` document that PostgreSQL re-serialised differs here; verify then falls back to
comparing canonical forms, as it does for every other destination. Floats hash as PostgreSQL
hashes them (NaNs alike, zero as the seed) plus a bit for a negative zero, which its own hash
does not tell from zero.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors import _hashes
from connectors.base import Column, TableSchema
from connectors.canonical import conform_array, null_mask, numeric_bits, value_bytes

_U32 = np.uint32
_EPOCH_2000_DAYS = 10957  # PostgreSQL counts dates and timestamps from 2000-01-01
_EPOCH_2000_US = _EPOCH_2000_DAYS * 86_400_000_000
_NAN_BITS = np.uint64(0x7FF8000000000000)  # the one NaN PostgreSQL hashes (get_float8_nan)
_ARRAY_OF_ONE = np.uint64(31)  # hash_array_extended of a one-element array: 31 + the element's hash
_NEGATIVE_ZERO = "({n} = 0 AND float8send({n}::float8) <> float8send(0))::int4"  # 1 for -0.0

_INT4 = {"bool", "int8", "int16", "int32", "uint8", "uint16"}
_INT8 = {"int64", "uint32"}
_FLOAT = {"float32", "float64"}
_AS_TEXT = {"string", "char", "uuid", "json", "decimal", "uint64"}
_SUPPORTED = _INT4 | _INT8 | _FLOAT | _AS_TEXT | {"date", "timestamp", "timestamptz", "binary"}


def supports(schema: TableSchema, existing: TableSchema | None = None) -> bool:
    """Whether every column has a hash here; with `existing` (a table whose column types the
    staging table copies), only when each of its columns hashes by the same SQL as the schema's."""
    if not all(c.type in _SUPPORTED for c in schema.columns):
        return False
    return existing is None or all(_sql_hash("v", c, 1) == _sql_hash("v", existing.column(c.name), 1)
                                   for c in schema.columns)


def checksum_sql(schema: TableSchema, quote: Callable[[str], str]) -> str:
    """The SQL expression of one row's hash (a signed bigint), equal to `row_hashes` of that row."""
    terms = [f"coalesce({_sql_hash(quote(c.name), c, i + 1)}, {_null_hash(i + 1)})" for i, c in enumerate(schema.columns)]
    return " # ".join(terms)


def _sql_hash(name: str, col: Column, seed: int) -> str:
    if col.type in _INT4:
        return f"hashint4extended({name}::int4, {seed})"
    if col.type in _INT8:
        return f"hashint8extended({name}::int8, {seed})"
    if col.type == "date":
        return f"hashint4extended({name} - date '2000-01-01', {seed})"
    if col.type == "timestamp":
        return f"timestamp_hash_extended({name}, {seed})"
    if col.type == "timestamptz":
        return f"timestamp_hash_extended({name} AT TIME ZONE 'UTC', {seed})"
    if col.type in _FLOAT:
        return f"hashfloat8extended({name}::float8, {seed}) # " + _NEGATIVE_ZERO.format(n=name)
    if col.type == "binary":  # bytea's hash function takes no SQL argument; an array of one calls it
        return f"CASE WHEN {name} IS NOT NULL THEN hash_array_extended(ARRAY[{name}], {seed}) END"
    if col.type == "decimal" and col.precision is not None:  # as many decimals as the Arrow type prints
        name = f"{name}::numeric({col.precision}, {col.scale or 0})"
    return f'hashtextextended({name}::text COLLATE "C", {seed})'


# PostgreSQL type -> its own hash function, for two tables of identical column types (no Arrow
# side). Where that function overlooks a difference verify must see, a term adds it: numeric's
# hash ignores the sign, float's the sign of zero; jsonb's ignores the signs of numbers (and
# nesting), so jsonb hashes its text.
_NATIVE = {
    "int2": "hashint2extended({n}, {s})", "int4": "hashint4extended({n}, {s})", "int8": "hashint8extended({n}, {s})",
    "numeric": "hash_numeric_extended({n}, {s}) # ({n} < 0)::int4",
    "uuid": "uuid_hash_extended({n}, {s})", "timestamp": "timestamp_hash_extended({n}, {s})",
    "timestamptz": "timestamp_hash_extended({n} AT TIME ZONE 'UTC', {s})", "bool": "hashint4extended({n}::int4, {s})",
    "float4": "hashfloat8extended({n}::float8, {s}) # " + _NEGATIVE_ZERO, "float8": "hashfloat8extended({n}, {s}) # " + _NEGATIVE_ZERO,
    "text": 'hashtextextended({n} COLLATE "C", {s})', "varchar": 'hashtextextended({n}::text COLLATE "C", {s})',
    "bpchar": 'hashbpcharextended({n} COLLATE "C", {s})', "json": 'hashtextextended({n}::text COLLATE "C", {s})',
    "jsonb": 'hashtextextended({n}::text COLLATE "C", {s})',
}


def same_types_checksum_sql(columns: dict[str, str], quote: Callable[[str], str]) -> str:
    """One row's hash for tables whose columns (name -> PostgreSQL type name) are identical on both
    sides: each value by its type's own hash function, with the terms above (0.55 s per million
    bench rows, jsonb's text 0.2 of it; hash_record_extended over the row takes 0.48 s but misses a
    numeric's sign and any number's sign in jsonb). Other types go through hash_record_extended of
    a one-column row."""
    terms = []
    for seed, (name, pg_type) in enumerate(columns.items(), start=1):
        native = _NATIVE.get(pg_type, "hash_record_extended(ROW({n}), {s})")
        terms.append(f"coalesce({native.format(n=quote(name), s=seed)}, {_null_hash(seed)})")
    return " # ".join(terms)


# PostgreSQL type -> how connectors/_hashes.c reads its binary COPY form (its `enum kind`)
# to hash it as same_types_checksum_sql does: 1 int2, 2 int4 (date: days), 3 int8 (timestamps and
# time: microseconds), 4 bool, 5 float4, 6 float8, 7 numeric, 8 bytes as sent, 9 bpchar (trailing
# spaces dropped), 10 jsonb (its text after a version byte).
_STREAM_KINDS = {
    "int2": 1, "int4": 2, "date": 2, "int8": 3, "timestamp": 3, "timestamptz": 3, "time": 3, "bool": 4,
    "float4": 5, "float8": 6, "numeric": 7, "text": 8, "varchar": 8, "json": 8, "uuid": 8, "bytea": 8,
    "bpchar": 9, "jsonb": 10,
}


def stream_hashes(types: Iterable[str]) -> bool:
    """Whether stream_hasher reads every one of these PostgreSQL types."""
    return all(t in _STREAM_KINDS for t in types)


def stream_hasher(columns: dict[str, str]) -> "_hashes.CopyHasher":
    """A hasher of binary COPY data with these columns (name -> PostgreSQL type name, all of them
    stream_hashes) whose checksum is same_types_checksum_sql's over the same rows, where the server
    stores text as the stream carries it (UTF-8): `update(piece)` with each piece in order, then
    `finish()` -> (rows, wrapping sum)."""
    types = list(columns.values())
    # types without a _NATIVE hash go through hash_record_extended(ROW(x)), which hashes a NULL as 0
    nulls = [_null_hash(seed) if t in _NATIVE else 0 for seed, t in enumerate(types, start=1)]
    return _hashes.CopyHasher(bytes(_STREAM_KINDS[t] for t in types), nulls)


def _null_hash(seed: int) -> int:
    return -seed  # any constant per column; a NULL moved to another column changes the row's hash


def row_hashes(batch: pa.RecordBatch, schema: TableSchema) -> np.ndarray:
    """One uint64 per row: the bits of `checksum_sql` for that row."""
    acc = np.zeros(batch.num_rows, np.uint64)
    for i, (col, arr) in enumerate(zip(schema.columns, batch.columns)):
        arr = conform_array(arr, col)  # the copy may hash the source's types: hash the destination's
        h = _column_hashes(arr, col, i + 1)
        if arr.null_count:
            h[null_mask(arr)] = np.int64(_null_hash(i + 1)).view(np.uint64)
        acc ^= h
    return acc


def _column_hashes(arr: pa.Array, col: Column, seed: int) -> np.ndarray:
    if col.type in _INT4 or col.type == "date":
        return _hash_uint32(_integers(arr, col).astype(np.int32).view(_U32), seed)
    if col.type in _INT8 or col.type in ("timestamp", "timestamptz"):
        values = _integers(arr, col)  # hashint8extended folds the high half into the low one
        lo, hi = values.astype(_U32), (values >> 32).astype(_U32)
        return _hash_uint32(lo ^ np.where(values >= 0, hi, ~hi), seed)
    if col.type in _FLOAT:
        return _float_hashes(numeric_bits(arr).view(np.float64), seed)
    if col.type == "binary":
        with np.errstate(over="ignore"):
            return _hash_bytes(arr, seed) + _ARRAY_OF_ONE
    if col.type in ("decimal", "uint64") and not pa.types.is_string(arr.type):
        arr = _as_text(arr)
    return _hash_bytes(arr, seed)


def _as_text(arr: pa.Array) -> pa.Array:
    """Numbers as PostgreSQL prints them. Arrow prints decimals under 1e-6 with an exponent
    (-1E-10, 0E-10); those few are written out in Python."""
    text = arr.cast(pa.string())
    if not pa.types.is_decimal(arr.type):
        return text
    exponent = pc.match_substring(text, "E")  # null for a null value (fill_null would import pandas)
    if not exponent.true_count:
        return text
    plain = pa.array([format(v, "f") for v in arr.take(pc.indices_nonzero(exponent)).to_pylist()], pa.string())
    return pc.replace_with_mask(text, exponent, plain)


def _integers(arr: pa.Array, col: Column) -> np.ndarray:
    """The integer PostgreSQL hashes for each value: dates and timestamps count from 2000-01-01."""
    values = numeric_bits(arr).view(np.int64)
    if col.type == "date":
        return values - _EPOCH_2000_DAYS
    if col.type in ("timestamp", "timestamptz"):
        return values - _EPOCH_2000_US
    return values


def _float_hashes(values: np.ndarray, seed: int) -> np.ndarray:
    """hashfloat8extended of each value, XOR 1 for a negative zero."""
    bits = np.where(np.isnan(values), _NAN_BITS, values.view(np.uint64))
    h = _hash_8_bytes(bits, seed)
    zero = values == 0
    h[zero] = np.uint64(seed) ^ np.signbit(values[zero]).astype(np.uint64)
    return h


# --- lookup3, in C (connectors/_hashes.c) -----------------------------------------------

def _hash_uint32(k: np.ndarray, seed: int) -> np.ndarray:
    """`hash_uint32_extended(k, seed)` for every k."""
    out = np.empty(len(k), np.uint64)
    _hashes.lookup3_uint32_each(np.ascontiguousarray(k, _U32), out, seed)
    return out


def _hash_8_bytes(k: np.ndarray, seed: int) -> np.ndarray:
    """`hash_bytes_extended` of each uint64's 8 little-endian bytes."""
    n = len(k)
    return _lookup3(np.ascontiguousarray(k, "<u8").view(np.uint8), np.arange(0, 8 * n, 8), np.full(n, 8), seed)


def _hash_bytes(arr: pa.Array, seed: int) -> np.ndarray:
    """`hash_bytes_extended(value, seed)` of each value's bytes (UTF-8 for text)."""
    return _lookup3(*value_bytes(arr), seed)


def _lookup3(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, seed: int) -> np.ndarray:
    out = np.empty(len(starts), np.uint64)
    _hashes.lookup3_each(data, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(lengths, np.int64), out, seed)
    return out
