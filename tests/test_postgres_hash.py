"""A PostgreSQL destination hashes staged rows where they are; the copy computes the same hash over the
Arrow batches it extracted. Equal for every type and every source engine, different for any change."""
from __future__ import annotations

import psycopg
import pytest

from connectors.base import RowFilter
from connectors.canonical import Checksum
from flows.migrate_tables import migrate_tables
from tasks.plan import destination_schema
from tests.conftest import ENGINES, make_endpoint
from tests.helpers import create_table, open_url
from tests.test_type_matrix import MATRIX, ROWS

# documents as jsonb prints them: the text a source sends then equals the text PostgreSQL hashes
JSONB_TEXT = ['{"a": [1, 2.5, "x"], "b": 1, "nested": {"k": null}}', "[]", '"just a string"', None, '{"k": "\\n"}']
SOURCE_ROWS = [{**row, "j": doc} for row, doc in zip(ROWS, JSONB_TEXT)]
# where the source holds them (MySQL has no NaN or infinity, SQLite no -0.0)
FLOATS = [(float("nan"), -0.0), (float("inf"), 0.0), (float("-inf"), -1e-300), (None, float("nan")), (-0.0, 1.5)]
SPECIAL_FLOAT_ROWS = [{**row, "f32": f32, "f64": f64} for row, (f32, f64) in zip(SOURCE_ROWS, FLOATS)]


def _in_place_and_extracted(source_url: str, dest_url: str) -> tuple[Checksum, Checksum]:
    """The destination's in-place checksum of the migrated table, and the same hash computed the way
    the copy computes it: over the batches the source connector reads."""
    source, dest = open_url(source_url), open_url(dest_url)
    try:
        schema = source.describe(MATRIX.name)
        dest_schema, _ = destination_schema(schema, dest, [])
        assert dest.hashes_in_place(dest_schema)
        extracted = Checksum()
        for batch in source.read_batches(schema, RowFilter()):
            extracted.add_hashes(dest.in_place_row_hashes(batch, dest_schema))
        return dest.in_place_checksum(dest_schema, RowFilter()), extracted
    finally:
        source.close()
        dest.close()


@pytest.mark.parametrize("src", ENGINES)
def test_in_place_checksum_equals_the_hash_of_what_the_source_sent(request, src, postgres_url):
    source = make_endpoint(request, src)
    create_table(source, MATRIX, SPECIAL_FLOAT_ROWS if src in ("postgres", "clickhouse") else SOURCE_ROWS)
    migrate_tables(source=source, destination=postgres_url, tables=[MATRIX.name], chunk_rows=2)

    in_place, extracted = _in_place_and_extracted(source, postgres_url)

    assert in_place.rows == len(SOURCE_ROWS)
    assert in_place == extracted


CHANGES = {
    "i64": "i64 = i64 - 1",
    "dec": "dec = dec + 0.0000000001",
    "f64": "f64 = 0.0",  # the row's -0.0 becomes +0.0
    "txt": "txt = NULL",  # was the empty string
    "ch": "ch = 'x'",  # was '  x': trailing spaces do not count in char, leading ones do
    "tz": "tz = tz + interval '1 microsecond'",
    "d": "d = d + 1",
    "j": """j = '{"k": "\\\\n "}'""",
    "b": "b = '\\x00'::bytea",
    "order": "\"order\" = NOT \"order\"",
}
ROW_OF = {"i64": 2, "dec": 2, "f64": 1, "txt": 3, "ch": 5, "tz": 2, "d": 1, "j": 5, "b": 2, "order": 1}


@pytest.mark.parametrize("column", list(CHANGES))
def test_one_changed_value_changes_the_in_place_checksum(postgres_db, column):
    source, dest = postgres_db(), postgres_db()
    create_table(source, MATRIX, SPECIAL_FLOAT_ROWS)
    migrate_tables(source=source, destination=dest, tables=[MATRIX.name])
    before, extracted = _in_place_and_extracted(source, dest)
    assert before == extracted

    with psycopg.connect(dest, autocommit=True) as c:
        changed = c.execute(f'UPDATE "TypeMatrix" SET {CHANGES[column]} WHERE id = %s', [ROW_OF[column]]).rowcount
    after, _ = _in_place_and_extracted(source, dest)

    assert changed == 1
    assert after.rows == before.rows and after != before


def test_values_traded_between_rows_change_the_in_place_checksum(postgres_url, sqlite_url):
    create_table(sqlite_url, MATRIX, SOURCE_ROWS)
    migrate_tables(source=sqlite_url, destination=postgres_url, tables=[MATRIX.name])
    before, _ = _in_place_and_extracted(sqlite_url, postgres_url)

    with psycopg.connect(postgres_url, autocommit=True) as c:  # rows 1 and 2 trade their i32 values
        c.execute('UPDATE "TypeMatrix" t SET i32 = o.i32 FROM "TypeMatrix" o WHERE t.id + o.id = 3 AND t.id IN (1, 2)')
    after, _ = _in_place_and_extracted(sqlite_url, postgres_url)

    assert after.rows == before.rows and after != before
