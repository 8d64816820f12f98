"""connectors/_hashes.c refuses input it cannot read safely, with a clear error instead of a crash
or a silent wrong hash (its results are checked against the engines in test_in_place_hash.py and
test_postgres_stream.py)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from connectors import _hashes
from connectors.postgres_hash import stream_hasher

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)


def _row(*values: bytes | None) -> bytes:
    fields = b"".join(struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in values)
    return struct.pack(">h", len(values)) + fields


def _numeric(ndigits: int, weight: int, sign: int, dscale: int, digits: list[int]) -> bytes:
    return struct.pack(f">hhHh{len(digits)}h", ndigits, weight, sign, dscale, *digits)


def _finish(columns: dict[str, str], stream: bytes):
    hasher = stream_hasher(columns)
    hasher.update(stream)
    return hasher.finish()


def test_a_well_formed_stream_in_any_pieces_hashes_alike():
    stream = HEADER + _row(struct.pack(">q", 7), b"text") + _row(struct.pack(">q", -7), None) + TRAILER
    whole = _finish({"id": "int8", "t": "text"}, stream)
    hasher = stream_hasher({"id": "int8", "t": "text"})
    for byte in stream:
        hasher.update(bytes([byte]))
    assert hasher.finish() == whole and whole[0] == 2


@pytest.mark.parametrize("stream, error", [
    (b"PGCOPY\n\xff\r\n\x01" + bytes(8), "not a binary COPY stream"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 1 << 16, 0), "header flags"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, -5), "header extension length"),
    (HEADER + struct.pack(">hi", 1, -2), "value length out of range"),
    (HEADER + struct.pack(">hi", 1, 0x7FFFFFFF), "value length out of range"),
    (HEADER + _row(struct.pack(">i", 7)), "does not fit its column's type"),  # an int4 in an int8 column
    (HEADER + _row(struct.pack(">q", 1), b"x") + TRAILER, "another number of columns"),
    (HEADER + _row(struct.pack(">q", 1)) + TRAILER + b"\x00", "data after the end"),
])
def test_a_malformed_stream_is_refused_naming_the_fault(stream, error):
    hasher = stream_hasher({"id": "int8"})
    with pytest.raises(ValueError, match=error):
        hasher.update(stream)
        hasher.finish()


@pytest.mark.parametrize("value", [
    _numeric(1, 0, 0x1234, 0, [5]),  # no such sign
    _numeric(1, 0, 0xC000, 0, [5]),  # NaN with digits
    _numeric(3, 0, 0, 0, [1, 2]),  # fewer digits than it says
])
def test_a_malformed_numeric_is_refused(value):
    with pytest.raises(ValueError, match="does not fit its column's type"):
        _finish({"n": "numeric"}, HEADER + _row(value) + TRAILER)


def test_a_hasher_takes_one_set_of_columns_once():
    with pytest.raises(ValueError, match="1 to 1600 columns"):
        _hashes.CopyHasher(b"", [])
    hasher = stream_hasher({"id": "int8"})
    with pytest.raises(RuntimeError, match="initialised once"):
        hasher.__init__(b"\x03", [0])
    with pytest.raises(RuntimeError, match="not initialised"):
        _hashes.CopyHasher.__new__(_hashes.CopyHasher).update(HEADER)


def test_null_hashes_that_shrink_while_read_are_read_as_given():
    """An integer whose conversion empties the list it came from (a crash when the list was read in place)."""
    nulls: list = []

    class Shrinking:
        def __index__(self) -> int:
            nulls.clear()
            return 7

    nulls[:] = [Shrinking(), 1]
    hasher = _hashes.CopyHasher(bytes([8, 8]), nulls)
    hasher.update(HEADER + _row(None, None) + TRAILER)
    assert hasher.finish() == (1, 7 ^ 1)


def test_array_hashes_refuse_positions_outside_the_data():
    data, out = np.frombuffer(b"abcdef", np.uint8), np.empty(1, np.uint64)
    for starts, lengths in ([2**63 - 1], [1]), ([4], [3]), ([-1], [1]):
        with pytest.raises(ValueError, match="within the data"):
            _hashes.xxh64_each(data, np.array(starts, np.int64), np.array(lengths, np.int64), out)
        with pytest.raises(ValueError, match="within the data"):
            _hashes.lookup3_each(data, np.array(starts, np.int64), np.array(lengths, np.int64), out, 1)
    _hashes.xxh64_each(data, np.array([0], np.int64), np.array([0], np.int64), out)
    assert out[0] == 0xEF46DB3751D8E999  # XXH64 of no bytes
