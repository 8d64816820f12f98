"""ClickHouse's own hash functions, computed over Arrow arrays.

A ClickHouse destination verifies a chunk by hashing the rows where they are, in SQL
(`checksum_sql`), instead of sending them back to us; `row_hashes` computes the same numbers over
the batches the copy extracted. Every value hashes through `xxHash64` (XXH64, seed 0): text and
binary as their bytes, numbers, dates and timestamps as the 8 bytes of a 64-bit integer. A row's
hash is the hash of the sum of its values' hashes, each times an odd constant of its column's
position (hashing the sum again ties values to their row: a plain sum over rows and columns would
not see two rows trade a value).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from connectors import _hashes
from connectors.base import Column, TableSchema
from connectors.canonical import conform_array, null_mask, numeric_bits, xxh64

_U64 = np.uint64

_INTEGER = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_BYTES = {"string", "char", "json", "binary", "uuid"}
_SUPPORTED = _INTEGER | _BYTES | {"float32", "float64", "date", "timestamp", "timestamptz", "decimal"}


def supports(schema: TableSchema, existing: TableSchema | None = None) -> bool:
    """Whether every column has a hash here; with `existing` (a table whose column types the
    staging table copies), only when each of its columns hashes as the schema's would."""
    if not all(c.type in _SUPPORTED and (c.type != "decimal" or c.precision) for c in schema.columns):
        return False
    return existing is None or all(_signature(c) == _signature(existing.column(c.name)) for c in schema.columns)


def _signature(col: Column) -> tuple:
    """What decides a column's hash: its SQL and, for a decimal, the scale and width of its bytes."""
    return _sql_hash("v", col), col.precision if col.type == "decimal" else None, col.scale


def checksum_sql(schema: TableSchema, quote: Callable[[str], str]) -> str:
    """The SQL expression of one row's hash (a UInt64), equal to `row_hashes` of that row."""
    weighted = " + ".join(f"ifNull({_sql_hash(quote(c.name), c)}, {_null_hash(i)}) * {_weight(i)}"
                          for i, c in enumerate(schema.columns))
    return f"xxHash64({weighted})"


def _sql_hash(name: str, col: Column) -> str:
    if col.type in _BYTES:
        return f"xxHash64(toString({name}))" if col.type == "uuid" else f"xxHash64({name})"
    if col.type == "decimal":  # the unscaled value's bytes, 4 to 32 of them by precision
        return f"xxHash64(reinterpretAsFixedString({name}))"
    return f"xxHash64({_sql_integer(name, col)})"


def _sql_integer(name: str, col: Column) -> str:
    """The 64-bit integer `numeric_bits` reads for the value: integers sign-extended, floats as
    float64, dates in days and timestamps in microseconds since 1970."""
    if col.type in ("float32", "float64"):
        return f"reinterpretAsUInt64(toFloat64({name}))"
    if col.type == "date":
        return f"toInt64(toInt32({name}))"
    if col.type in ("timestamp", "timestamptz"):
        return f"toUnixTimestamp64Micro({name})"
    return f"toUInt64({name})" if col.type == "uint64" else f"toInt64({name})"


def _null_hash(position: int) -> int:
    return position + 1  # any constant per column


def _weight(position: int) -> int:
    return (0x9E3779B97F4A7C15 * (2 * position + 1)) & 0xFFFFFFFFFFFFFFFF  # odd: no value's hash is lost


def row_hashes(batch: pa.RecordBatch, schema: TableSchema) -> np.ndarray:
    """One uint64 per row: `checksum_sql` of that row."""
    acc = np.zeros(batch.num_rows, _U64)
    with np.errstate(over="ignore"):
        for i, (col, arr) in enumerate(zip(schema.columns, batch.columns)):
            arr = conform_array(arr, col)  # the copy may hash the source's types: hash the destination's
            if col.type in _BYTES:
                h = xxh64(arr)
            elif col.type == "decimal":
                h = xxh64(_decimal_bytes(arr, col.precision))
            else:
                h = _xxh64_word(numeric_bits(arr))
            if arr.null_count:
                h[null_mask(arr)] = _U64(_null_hash(i))
            acc += h * _U64(_weight(i))
    return _xxh64_word(acc)


def _decimal_bytes(arr: pa.Array, precision: int) -> pa.Array:
    """Each decimal's unscaled value as the bytes ClickHouse keeps: Decimal32 to Decimal256 hold
    4 to 32 bytes, the low end of Arrow's 16 or 32 (little-endian two's complement)."""
    width = 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    size = arr.type.byte_width
    values = np.frombuffer(arr.buffers()[1], np.uint8, len(arr) * size, offset=arr.offset * size)
    kept = np.ascontiguousarray(values.reshape(len(arr), size)[:, :width])
    offsets = np.arange(0, (len(arr) + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), len(arr), [None, pa.py_buffer(offsets), pa.py_buffer(kept)])


# --- XXH64, in C (connectors/_hashes.c) --------------------------------------------------

def _xxh64_word(bits: np.ndarray) -> np.ndarray:
    """XXH64 (seed 0) of each uint64's 8 little-endian bytes."""
    out = np.empty(len(bits), _U64)
    _hashes.xxh64_uint64_each(np.ascontiguousarray(bits, "<u8"), out)
    return out
