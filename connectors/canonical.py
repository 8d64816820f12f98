"""Canonical Arrow form of each logical type, and the order-independent checksum.

Every connector's reads end in `conform()`, so a value read from any engine has
one representation here. Verification hashes that representation, which is why
a checksum computed on PostgreSQL equals the one computed on ClickHouse.
"""
from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connectors import _hashes
from connectors.base import Column, MigrationError, TableSchema

_FIXED = {
    "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(),
    "int64": pa.int64(), "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(),
    "uint64": pa.uint64(), "float32": pa.float32(), "float64": pa.float64(),
    "string": pa.string(), "char": pa.string(), "uuid": pa.string(), "json": pa.string(),
    "date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", "UTC"),
    "binary": pa.binary(),
}


def arrow_type(col: Column) -> pa.DataType:
    if col.type == "decimal":
        if col.precision is None:
            return pa.string()  # unconstrained NUMERIC: exact as text
        factory = pa.decimal128 if col.precision <= 38 else pa.decimal256
        return factory(col.precision, col.scale or 0)
    return _FIXED[col.type]


def arrow_schema(schema: TableSchema) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in schema.columns])


_LONG_NUMBER = re.compile(r"\d{16,}")


def _canonical_document(text: str | None) -> str | None:
    """Sorted keys, no whitespace. orjson is ~7x faster, but reads integers past 64 bits as floats,
    so documents with long numbers take the exact (slower) json path."""
    if text is None:
        return None
    if not _LONG_NUMBER.search(text):
        try:
            return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(arr: pa.Array) -> pa.Array:
    return pa.array([_canonical_document(v) for v in arr.to_pylist()], pa.string())


def conform_array(arr: pa.Array, col: Column, json_canonical: bool = False) -> pa.Array:
    target = arrow_type(col)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr.type, pa.ExtensionType):
        arr = arr.storage
    if arr.type != target:
        arr = _convert(arr, col, target)
    if col.type == "char":
        arr = pc.utf8_rtrim(arr, characters=" ")
    elif col.type == "uuid":
        arr = pc.utf8_lower(arr)
    elif col.type == "json" and json_canonical:
        arr = canonical_json(arr)
    return arr


def _convert(arr: pa.Array, col: Column, target: pa.DataType) -> pa.Array:
    src = arr.type
    try:
        if col.type == "bool" and pa.types.is_integer(src):
            return arr.cast(pa.bool_())  # non-zero is true; no Python scalar (that imports pandas: 50 MB)
        if col.type == "bool" and pa.types.is_decimal(src):
            return pc.not_equal(arr, pa.scalar(0, src))
        if pa.types.is_binary(src) and pa.types.is_string(target):
            return arr.cast(pa.string())
        if pa.types.is_timestamp(src) and pa.types.is_timestamp(target):
            if src.tz and not target.tz:
                arr = arr.cast(pa.timestamp(src.unit, "UTC")).cast(pa.timestamp(src.unit))
            return arr.cast(target)
        if pa.types.is_floating(src) and pa.types.is_decimal(target):
            return pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string()).cast(target)
        if pa.types.is_null(src):
            return pa.nulls(len(arr), target)
        return arr.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MigrationError(f"column {col.name!r}: cannot represent {src} values as {col.describe()}: {exc}") from exc


def conform(batch: pa.RecordBatch | pa.Table, schema: TableSchema, json_canonical: bool = False) -> pa.RecordBatch:
    arrays = [conform_array(batch.column(c.name), c, json_canonical) for c in schema.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(schema))


# --- order-independent checksum -------------------------------------------------

_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1
_WORD_PRIME = np.uint64(0x100000001B3)  # odd: a change in any one word always changes the sum


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, on a whole array: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> np.uint64(33))


def numeric_bits(arr: pa.Array) -> np.ndarray:
    """The 64-bit pattern of each fixed-width value, read from the value buffer (null slots hold
    whatever is there: the null mask is applied apart, and filling them would take a Python scalar,
    whose conversion imports pandas, 50 MB)."""
    t = arr.type
    if pa.types.is_temporal(t):
        arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
    elif pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    if pa.types.is_floating(arr.type):
        wide = pa.float64()
    else:
        wide = pa.uint64() if pa.types.is_unsigned_integer(arr.type) else pa.int64()
    arr = arr.cast(wide)
    if not len(arr):
        return np.zeros(0, np.uint64)
    return np.frombuffer(arr.buffers()[1], np.uint64, len(arr), offset=arr.offset * 8)


def _decimal_hashes(arr: pa.Array) -> np.ndarray:
    """Decimals hash their 16- or 32-byte two's-complement value: equal numbers of one type, equal bytes."""
    words = arr.type.byte_width // 8
    values = np.frombuffer(arr.buffers()[1], np.uint64, len(arr) * words, offset=arr.offset * arr.type.byte_width)
    values = values.reshape(len(arr), words)
    h = np.zeros(len(arr), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(words):
            h = h * _WORD_PRIME + values[:, i]
    return fmix64(h)


def value_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bytes of a text or binary array's values, back to back, and each value's start and
    length (int64)."""
    if not len(arr):  # its offsets buffer may be empty
        return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    width = 8 if large else 4
    offsets = np.frombuffer(arr.buffers()[1], np.int64 if large else np.int32, len(arr) + 1, offset=arr.offset * width)
    offsets = offsets.astype(np.int64)
    base, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    data = np.frombuffer(arr.buffers()[2], np.uint8, total, offset=base) if total else np.zeros(0, np.uint8)
    return data, offsets[:-1] - base, np.diff(offsets)


def xxh64(arr: pa.Array) -> np.ndarray:
    """XXH64 (seed 0) of each text or binary value's bytes (connectors/_hashes.c)."""
    data, starts, lengths = value_bytes(arr)
    out = np.empty(len(arr), np.uint64)
    _hashes.xxh64_each(data, starts, lengths, out)
    return out


def column_hashes(arr: pa.Array) -> np.ndarray:
    t = arr.type
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_temporal(t) or pa.types.is_floating(t):
        h = fmix64(numeric_bits(arr))
    elif pa.types.is_decimal(t):
        h = _decimal_hashes(arr)
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        h = xxh64(arr)
    else:
        raise MigrationError(f"no checksum for Arrow type {t}")
    if arr.null_count:
        h = np.where(null_mask(arr), _NULL_HASH, h)
    return h


def null_mask(arr: pa.Array) -> np.ndarray:
    """True where `arr` is null, from its validity bitmap (Arrow's own to_numpy imports pandas)."""
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)] == 0


def row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """One uint64 per row, depending on every value and its column position."""
    acc = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, arr in enumerate(batch.columns):
            acc = (acc * np.uint64(1099511628211) + np.uint64(i + 1)) ^ column_hashes(arr)
    return fmix64(acc)


class Checksum:
    """Count plus wrapping sum of row hashes: equal for the same rows in any order."""

    __slots__ = ("rows", "total")

    def __init__(self, rows: int = 0, total: int = 0):
        self.rows, self.total = rows, total & _MASK64

    def add(self, batch: pa.RecordBatch) -> None:
        self.add_hashes(row_hashes(batch))

    def add_hashes(self, hashes: np.ndarray) -> None:
        """Add rows by their hashes (an engine's own row hash: see Connector.hashes_in_place)."""
        if len(hashes):
            self.merge(Checksum(len(hashes), int(hashes.sum(dtype=np.uint64))))

    def merge(self, other: "Checksum") -> None:
        """Add `other`'s rows: the checksum of both sets of rows together."""
        self.rows += other.rows
        self.total = (self.total + other.total) & _MASK64

    def __eq__(self, other) -> bool:
        return isinstance(other, Checksum) and (self.rows, self.total) == (other.rows, other.total)

    def __repr__(self) -> str:
        return f"{self.rows} rows/{self.total:016x}"

    def digest(self) -> str:
        return f"{self.total:016x}"


def for_checksum(batch: pa.RecordBatch, schema: TableSchema, json_canonical: bool) -> pa.RecordBatch:
    """The batch as hashed: JSON re-serialised when one side of the copy normalises documents."""
    if not json_canonical or not any(c.type == "json" for c in schema.columns):
        return batch
    arrays = [canonical_json(a) if c.type == "json" else a for c, a in zip(schema.columns, batch.columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def has_negative_zero(arr: pa.Array) -> bool:
    values = arr.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False)
    return bool(np.any((values == 0) & np.signbit(values)))


def needs_json_canonical(source, dest) -> bool:
    """JSON must be re-serialised before hashing only when the destination rewrites documents its own way.

    A verbatim destination returns the text the source gave; the same engine normalises identically.
    """
    return not dest.json_verbatim and source.engine != dest.engine
