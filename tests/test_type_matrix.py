"""Every directed engine pair moves every supported type, and the values read back equal the source."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from connectors.base import Column, TableSchema
from flows.migrate_tables import migrate_tables
from tests.conftest import engine_pairs, make_endpoint
from tests.helpers import assert_rows_equal, create_table, read_rows

UTC = dt.timezone.utc
LONG_TEXT = "long " + "x" * 70_000 + " é end"

MATRIX = TableSchema("TypeMatrix", (
    Column("id", "int64", False),
    Column("select", "int8"),  # reserved word
    Column("MixedCase", "int16"),
    Column("i32", "int32"),
    Column("i64", "int64"),
    Column("dec", "decimal", precision=38, scale=10),
    Column("money", "decimal", precision=12, scale=2),
    Column("f32", "float32"),
    Column("f64", "float64"),
    Column("order", "bool"),  # reserved word
    Column("txt", "string"),
    Column("vc", "string", length=20),
    Column("ch", "char", length=5),
    Column("d", "date"),
    Column("ts", "timestamp"),
    Column("tz", "timestamptz"),
    Column("u", "uuid"),
    Column("j", "json"),
    Column("b", "binary"),
), ("id",))

ROWS = [
    dict(id=1, select=-128, MixedCase=-32768, i32=-2147483648, i64=-9223372036854775808,
         dec=Decimal("1234567890123456789012345678.0123456789"), money=Decimal("-9999999999.99"),
         f32=3.4028234663852886e38, f64=1.7976931348623157e308, order=True,
         txt="ünïcödé 数据 🚀 \u00a0", vc="short", ch="ab", d=dt.date(1900, 1, 1),
         ts=dt.datetime(2020, 2, 29, 23, 59, 59, 999999), tz=dt.datetime(2020, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
         u=str(uuid.UUID(int=1)), j='{"b": 1, "a": [1, 2.5, "x"], "nested": {"k": null}}', b=b"\x00\x01\x02\xff"),
    dict(id=2, select=127, MixedCase=32767, i32=2147483647, i64=9223372036854775807,
         dec=Decimal("-0.0000000001"), money=Decimal("0.01"), f32=-1.1754943508222875e-38, f64=5e-324,
         order=False, txt="tab\there\nnew line\r\nback\\slash 'single' \"double\" ,comma", vc="", ch="abcde",
         d=dt.date(2299, 12, 31), ts=dt.datetime(1970, 1, 1), tz=dt.datetime(1901, 12, 13, 20, 45, 52, 1, tzinfo=UTC),
         u=str(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")), j="[]", b=b""),
    dict(id=3, select=0, MixedCase=0, i32=0, i64=0, dec=Decimal("0"), money=Decimal("0.00"), f32=0.1,
         f64=-1e-300, order=None, txt="", vc=None, ch=None, d=dt.date(1970, 1, 1),
         ts=dt.datetime(2038, 1, 19, 3, 14, 8, 123456), tz=dt.datetime(2038, 1, 19, 3, 14, 8, 654321, tzinfo=UTC),
         u=None, j='"just a string"', b=b"\x00" * 100),
    dict(id=4, **{c.name: None for c in MATRIX.columns[1:]}),
    dict(id=5, select=None, MixedCase=None, i32=None, i64=None, dec=None, money=None, f32=None, f64=0.1,
         order=None, txt=LONG_TEXT, vc="NULL", ch="  x", d=None, ts=None, tz=None, u=None, j='{"k": "\\n"}', b=None),
]


def _f32(v):
    import numpy as np
    return None if v is None else float(np.float32(v))


EXPECTED = [{**r, "f32": _f32(r["f32"])} for r in ROWS]


@pytest.mark.parametrize("src,dst", engine_pairs())
def test_every_type_survives_every_pair(request, src, dst):
    source, destination = make_endpoint(request, src), make_endpoint(request, dst)
    create_table(source, MATRIX, ROWS)

    report = migrate_tables(source=source, destination=destination, tables=["TypeMatrix"], chunk_rows=2)

    assert report["verdict"] == "verified"
    assert report["tables"][0]["rows"] == len(ROWS)
    assert_rows_equal(MATRIX, EXPECTED, read_rows(destination, MATRIX))
