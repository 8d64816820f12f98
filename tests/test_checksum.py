"""The order-independent checksum verification relies on: same rows, same sum; any changed value, another."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from connectors.canonical import Checksum


def _batch(rows: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema)


SCHEMA = pa.schema([("id", pa.int64()), ("txt", pa.string()), ("bin", pa.binary()), ("dec", pa.decimal128(38, 10)),
                    ("big", pa.decimal256(60, 5)), ("f", pa.float64()), ("n", pa.int32()), ("flag", pa.bool_()),
                    ("at", pa.timestamp("us", "UTC"))])


def _rows(n: int) -> list[dict]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        text = "".join(rnd.choice("ab\tc\n\\'\"é数🚀") for _ in range(rnd.randrange(0, 40)))
        out.append({"id": i, "txt": None if i % 11 == 0 else text, "bin": bytes(rnd.randrange(256) for _ in range(i % 19)),
                    "dec": Decimal(i) / 8 if i % 5 else None, "big": Decimal(10) ** 50 + i, "f": i * 0.5,
                    "n": None if i % 7 == 0 else i - 1000, "flag": None if i % 3 == 0 else i % 2 == 0,
                    "at": None if i % 4 == 0 else dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=i)})
    return out


def _checksum(rows: list[dict], batch_rows: int) -> Checksum:
    total = Checksum()
    for start in range(0, len(rows), batch_rows):
        total.add(_batch(rows[start:start + batch_rows], SCHEMA))
    return total


def test_same_rows_in_any_order_and_batching_give_the_same_checksum():
    rows = _rows(3000)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert _checksum(rows, 3000) == _checksum(shuffled, 257) == _checksum(rows[::-1], 1000)
    sliced = _batch(rows, SCHEMA).slice(1003, 1000)  # offsets into shared buffers and mid-byte into null bitmaps
    assert _checksum(rows[1003:2003], 64) == _checksum(sliced.to_pylist(), 1000)
    whole = Checksum()
    whole.add(sliced)
    assert whole == _checksum(rows[1003:2003], 333)


@pytest.mark.parametrize("column,value", [
    ("txt", "x" * 70_000), ("bin", b"\x00"), ("bin", b""), ("dec", Decimal("0.0000000001")), ("big", Decimal(0)),
    ("f", -0.0), ("txt", None), ("txt", ""), ("n", None), ("n", 0), ("flag", None), ("flag", True), ("at", None),
])
def test_one_changed_value_changes_the_checksum(column, value):
    rows = _rows(2000)
    before = _checksum(rows, 500)
    for position in (0, 999, 1999):
        changed = [dict(r) for r in rows]
        if changed[position][column] == value:
            continue
        changed[position][column] = value
        assert _checksum(changed, 500) != before, f"{column}={value!r} at row {position} went unnoticed"


def test_a_single_byte_anywhere_in_a_long_value_is_noticed():
    base = "é" + "abcdefgh" * 40
    rows = [{"id": 1, "txt": base, "bin": b"", "dec": None, "big": None, "f": None}]
    before = _checksum(rows, 1)
    for i in range(1, len(base)):
        changed = dict(rows[0], txt=base[:i] + "Z" + base[i + 1:])
        assert _checksum([changed], 1) != before, f"byte {i} changed unnoticed"
