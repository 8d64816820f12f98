"""How Arrow batches become PostgreSQL COPY input.

Binary COPY, encoded by the ADBC driver, is the fast path: PostgreSQL reads binary values
without parsing text, and the encoding happens in C++. Binary values must match each
column's type exactly (an int8 sent to an int4 column is refused, a wrong numeric layout is
misread), so the layout is taken from the table's own catalog entry and every array is cast
to it first. Tables with a column type outside `_BINARY` (unconstrained numeric, arrays,
domains, extension types) load through CSV COPY, which PostgreSQL parses into any type.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import MigrationError

# pg_type.typname -> the Arrow type ADBC encodes as that type's binary form
_BINARY = {
    "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "float4": pa.float32(), "float8": pa.float64(),
    "bool": pa.bool_(), "text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "json": pa.string(),
    "jsonb": pa.json_(pa.string()), "uuid": pa.uuid(), "date": pa.date32(), "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"), "bytea": pa.binary(),
}

# the table's columns in order, with type name and modifier (numeric precision and scale live in the modifier)
LAYOUT_SQL = ("SELECT a.attname, t.typname, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
              "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")


def binary_layout(columns: list[tuple[str, str, int]]) -> pa.Schema | None:
    """The Arrow schema binary COPY needs for a table with these (name, typname, typmod) columns,
    or None when a column has no binary encoding here."""
    fields = []
    for name, typname, typmod in columns:
        if typname == "numeric":
            if typmod < 4:  # unconstrained: any precision, carried as text
                return None
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
            fields.append(pa.field(name, (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)))
        elif typname in _BINARY:
            fields.append(pa.field(name, _BINARY[typname]))
        else:
            return None
    return pa.schema(fields)


def for_binary_copy(batch: pa.RecordBatch, layout: pa.Schema) -> pa.RecordBatch | None:
    """`batch` with each column cast to the table's binary layout; None if some column's values
    cannot be carried in that form without going through text."""
    if set(layout.names) != set(batch.schema.names):
        return None
    arrays = []
    for field in layout:
        arr = batch.column(field.name)
        if arr.type == field.type:
            arrays.append(arr)
            continue
        converted = _convert(arr, field)
        if converted is None:
            return None
        arrays.append(converted)
    return pa.RecordBatch.from_arrays(arrays, schema=layout)


def _convert(arr: pa.Array, field: pa.Field) -> pa.Array | None:
    target = field.type
    if isinstance(target, pa.JsonType) and pa.types.is_string(arr.type):
        return pa.ExtensionArray.from_storage(target, arr)
    if isinstance(target, pa.UuidType) and pa.types.is_string(arr.type):
        return pa.ExtensionArray.from_storage(target, uuid_bytes(arr, field.name))
    exact = (
        (pa.types.is_integer(arr.type) and (pa.types.is_integer(target) or pa.types.is_decimal(target)))
        or (pa.types.is_decimal(arr.type) and pa.types.is_decimal(target))
        or (pa.types.is_floating(arr.type) and pa.types.is_floating(target))
        or (pa.types.is_string(arr.type) and pa.types.is_string(target))
    )
    if not exact:
        return None
    try:
        return arr.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MigrationError(f"column {field.name!r}: a value does not fit the destination's {target}: {exc}") from None


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def uuid_bytes(arr: pa.Array, column: str) -> pa.FixedSizeBinaryArray:
    """UUID text ('0a1b...-...') as 16-byte values, without a Python loop."""
    n = len(arr)
    compact = pc.replace_substring(pc.fill_null(arr, "0" * 32), "-", "")
    if n and not pc.all(pc.equal(pc.binary_length(compact), 32)).as_py():
        raise MigrationError(f"column {column!r}: a value is not a UUID")
    start = np.frombuffer(compact.buffers()[1], np.int32, count=1, offset=4 * compact.offset)[0] if n else 0
    digits = _HEX[np.frombuffer(compact.buffers()[2], np.uint8, count=32 * n, offset=int(start))]
    if (digits == 255).any():
        raise MigrationError(f"column {column!r}: a value is not a UUID")
    pairs = digits.reshape(n, 16, 2)
    packed = (pairs[:, :, 0] << 4) | pairs[:, :, 1]
    storage = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(packed.tobytes())])
    if arr.null_count:
        storage = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.binary(16)), storage)
    return storage


def csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """PostgreSQL's CSV wants bytea as \\x-hex text; everything else Arrow writes as PostgreSQL reads it."""
    arrays = []
    for arr in batch.columns:
        if pa.types.is_binary(arr.type):
            arr = pa.array([None if v is None else "\\x" + v.hex() for v in arr.to_pylist()], pa.string())
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
