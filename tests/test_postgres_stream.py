"""PostgreSQL to PostgreSQL: identical column types move as raw binary COPY data; anything else
goes through Arrow. Either way the destination ends with exactly the source's values."""
from __future__ import annotations

import random
import threading

import psycopg
import pytest

from connectors.base import VerificationFailed
from flows.migrate_tables import migrate_tables

NATIVE = """CREATE TABLE docs (
    id bigint PRIMARY KEY, body text, meta jsonb, amount numeric(38,10), at timestamptz, day date,
    tag varchar(12), raw bytea, ref uuid)"""
ROWS = [
    (1, '{"b": 1,   "a": [1, 2]}', '{"z": null, "a": 1.50}', "1234567890123456789012345678.0123456789",
     "infinity", "-infinity", "ab\tc", b"\x00\xff\x00", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    (2, None, None, None, None, None, None, None, None),
    (3, '  [ "spaced" ] ', "[]", "-0.0000000001", "1999-12-31 23:59:59.999999+00", "4713-01-01 BC", "",
     b"", "00000000-0000-0000-0000-000000000000"),
]


def _rows(url: str, table: str) -> list[tuple]:
    with psycopg.connect(url) as c:
        return c.execute(f"SELECT id, body::text, meta::text, amount::text, at::text, day::text, tag, raw, ref::text "
                         f"FROM {table} ORDER BY id").fetchall()


def test_identical_types_move_byte_for_byte_and_verify_on_both_servers(postgres_db):
    source, destination = postgres_db(), postgres_db()
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        c.execute(NATIVE)
        c.cursor().executemany("INSERT INTO docs VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", ROWS)

    report = migrate_tables(source=source, destination=destination, tables=["docs"], chunk_rows=2)

    assert report["verdict"] == "verified" and report["rows"] == 3
    assert report["tables"][0]["checksum"] != "0" * 16  # the server-side hash sum of the rows
    # values the Arrow path cannot carry (infinite timestamps, dates BC) arrive as they were
    assert _rows(destination, "docs") == _rows(source, "docs")


def test_different_existing_target_types_go_through_arrow(postgres_db):
    source, destination = postgres_db(), postgres_db()
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("CREATE TABLE items (id integer PRIMARY KEY, name varchar(20), price numeric(10,2))")
        c.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 500) g")
    with psycopg.connect(destination, autocommit=True) as c:  # wider types: compatible, not identical
        c.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(14,4))")

    report = migrate_tables(source=source, destination=destination, tables=["items"], chunk_rows=100)

    assert report["verdict"] == "verified" and report["rows"] == 500
    with psycopg.connect(destination) as c:
        assert c.execute("SELECT count(*), sum(price), max(name) FROM items").fetchone() == (500, 156562.5, "item 99")
        types = c.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'items' "
                          "ORDER BY ordinal_position").fetchall()
    assert [t[0] for t in types] == ["bigint", "text", "numeric"]  # the existing table's types are kept


def test_a_table_written_to_during_the_run_verifies_against_the_rows_copied(postgres_db):
    """Each chunk's rows are hashed as they pass from the source's COPY to the destination's, so
    rows changed after their chunk was copied do not fail verification; what arrived is a version
    each row had."""
    source, destination = postgres_db(), postgres_db()
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("CREATE TABLE live (id bigint PRIMARY KEY, n integer NOT NULL, body text)")
        c.execute("INSERT INTO live SELECT g, 0, md5(g::text) FROM generate_series(1, 60000) g")
    stop, updates = threading.Event(), []

    def write_while_running():
        with psycopg.connect(source, autocommit=True) as c:
            while not stop.is_set():
                c.execute("UPDATE live SET n = n + 1 WHERE id = %s", [random.randint(1, 60000)])
                updates.append(1)

    writer = threading.Thread(target=write_while_running)
    writer.start()
    try:
        report = migrate_tables(source=source, destination=destination, tables=["live"], chunk_rows=6000)
    finally:
        stop.set()
        writer.join()

    assert report["verdict"] == "verified" and report["rows"] == 60000
    assert len(updates) > 100  # the source really changed during the run
    with psycopg.connect(source) as s, psycopg.connect(destination) as d:
        now = dict(s.execute("SELECT id, n FROM live").fetchall())
        copied = dict(d.execute("SELECT id, n FROM live").fetchall())
    assert copied.keys() == now.keys() and all(copied[i] <= now[i] for i in now)
    assert any(copied[i] < now[i] for i in now)  # some rows changed after their chunk was copied


SIGN_FLIPS = {  # what a trigger on the destination does to one row as it is loaded
    "numeric": "NEW.amount := -NEW.amount",
    "jsonb number": "NEW.meta := jsonb_set(NEW.meta, '{a}', to_jsonb(-(NEW.meta->>'a')::numeric))",
}


@pytest.mark.parametrize("change", list(SIGN_FLIPS))
def test_verify_sees_a_sign_flipped_on_the_destination(postgres_db, change):
    """PostgreSQL's own hashes of numeric and jsonb ignore signs; the servers' row hash must not."""
    source, destination = postgres_db(), postgres_db()
    with psycopg.connect(source, autocommit=True) as c:
        c.execute(NATIVE)
        c.cursor().executemany("INSERT INTO docs (id, meta, amount) VALUES (%s, %s, %s)",
                               [(i, f'{{"a": {i}.5}}', f"{i}.25") for i in range(1, 101)])
    with psycopg.connect(destination, autocommit=True) as c:
        c.execute(f"""CREATE FUNCTION flip() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.id = 42 THEN {SIGN_FLIPS[change]}; END IF; RETURN NEW; END $$""")
        c.execute("""CREATE FUNCTION attach_flip() RETURNS event_trigger LANGUAGE plpgsql AS $$
            DECLARE r record;
            BEGIN
              FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
                IF r.object_identity LIKE '%__stage_%' THEN
                  EXECUTE format('CREATE TRIGGER flip BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION flip()',
                                 r.object_identity);
                END IF;
              END LOOP;
            END $$""")
        c.execute("CREATE EVENT TRIGGER flipper ON ddl_command_end WHEN TAG IN ('CREATE TABLE') "
                  "EXECUTE FUNCTION attach_flip()")

    with pytest.raises(VerificationFailed, match=r"table docs: chunk .* differs: .*id 42 \(columns (amount|meta)\)"):
        migrate_tables(source=source, destination=destination, tables=["docs"], chunk_rows=50)


# Every type the stream hasher reads, with the values that test a hash: extremes, NaN, infinities,
# negative zero, zeros and signs in numerics (one with 3,000 digits), empty and padded text, NULLs.
EVERY_KIND = """CREATE TABLE kinds (
    id bigint PRIMARY KEY, i2 smallint, i4 integer, b boolean, f4 real, f8 double precision,
    n numeric, n2 numeric(12,2), t text, v varchar(10), c char(6), j json, jb jsonb, u uuid, raw bytea,
    d date, ts timestamp, tz timestamptz, tm time)"""
KIND_VALUES = """INSERT INTO kinds VALUES
    (1, -32768, -2147483648, true, '-Infinity', '-1.7976931348623157e308', '-123.4500', '-0.01', '', '', '',
     '[]', '{"a": -1.5, "b": [true, null]}', '00000000-0000-0000-0000-000000000000', '', '-infinity',
     '-infinity', '-infinity', '00:00'),
    (2, 32767, 2147483647, false, 'NaN', 'NaN', 'NaN', '0', 'tab\there, line\nbreak', 'ünï', 'ab  ',
     '{"b": 1,  "a": 2}', '{"k": "v"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff00', 'infinity',
     'infinity', 'infinity', '23:59:59.999999'),
    (3, 0, 0, null, '-0', '-0', 'Infinity', '9999999999.99', repeat('x', 70000), null, null, null, 'null', null,
     null, '4713-01-01 BC', '1999-12-31 23:59:59.999999', '2000-01-01 00:00:00.000001+00', null),
    (4, null, null, false, '1.5e-45', '5e-324', '-Infinity', null, null, 'x', 'x', '1', '-0', null, '\\x00',
     '2000-01-01', '2000-01-01', '1970-01-01 00:00+00', '12:00'),
    (5, -1, -1, true, '0', '0', '0.000', '-9999999999.99', '🙂', 'quote''s', ' ', '"s"', '[1e-10, -0.5]',
     'ffffffff-ffff-ffff-ffff-ffffffffffff', '\\xdeadbeef', '2024-02-29', '2024-02-29 12:34:56.789012',
     '2024-02-29 12:34:56.789012-08', '00:00:00.000001'),
    (6, null, null, null, null, null, '-0.000', null, null, null, null, null, null, null, null, null, null, null,
     null),
    (7, 1, 1, true, 1, 1, ('1' || repeat('0', 2999) || '.5')::numeric, 1, 'a', 'a', 'a', '{}', '{}', null, null, null, null,
     null, null)"""


def _kinds_table(url: str) -> tuple[dict[str, str], int, int, bytes]:
    """The kinds table's column types, the server's count and sum of same_types_checksum_sql, and
    its binary COPY output."""
    from connectors import postgres_hash
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(EVERY_KIND)
        c.execute(KIND_VALUES)
        types = dict(c.execute("SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                               "WHERE a.attrelid = 'kinds'::regclass AND a.attnum > 0 ORDER BY a.attnum").fetchall())
        row_hash = postgres_hash.same_types_checksum_sql(types, lambda n: f'"{n}"')
        rows, total = c.execute(f"SELECT count(*), sum({row_hash}) FROM kinds").fetchone()
        with c.cursor().copy("COPY kinds TO STDOUT (FORMAT binary)") as copy:
            stream = b"".join(bytes(piece) for piece in copy)
    return types, rows, int(total) & (2**64 - 1), stream


def test_the_stream_hash_of_every_kind_equals_the_servers_row_hash(postgres_db):
    from connectors import postgres_hash
    types, rows, total, stream = _kinds_table(postgres_db())
    assert rows == 7

    for piece_size in (len(stream), 65536, 4096, 7, 1):  # any split into pieces hashes the same
        hasher = postgres_hash.stream_hasher(types)
        for at in range(0, len(stream), piece_size):
            hasher.update(stream[at:at + piece_size])
        assert hasher.finish() == (7, total), piece_size


def test_the_stream_hash_changes_with_any_value_and_refuses_a_cut_stream(postgres_db):
    from connectors import postgres_hash
    url = postgres_db()
    types, _, total, stream = _kinds_table(url)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE kinds SET n2 = -n2, jb = '{\"a\": 1.5, \"b\": [true, null]}' WHERE id IN (1, 5)")
        with c.cursor().copy("COPY kinds TO STDOUT (FORMAT binary)") as copy:
            changed = b"".join(bytes(piece) for piece in copy)
    hasher = postgres_hash.stream_hasher(types)
    hasher.update(changed)
    assert hasher.finish()[1] != total

    cut = postgres_hash.stream_hasher(types)
    cut.update(stream[:-40])
    with pytest.raises(ValueError, match="ended before its last row"):
        cut.finish()
    narrower = postgres_hash.stream_hasher({k: t for k, t in list(types.items())[:-1]})
    with pytest.raises(ValueError, match="another number of columns"):
        narrower.update(stream)
    assert not postgres_hash.stream_hashes(["int8", "interval"])  # no reader for it


@pytest.fixture
def latin1_db(postgres_db):
    """A PostgreSQL database that stores text in LATIN1 (the stream carries UTF-8)."""
    with psycopg.connect(postgres_db(), autocommit=True) as c:
        name = f"{c.info.dbname}_latin1"
        c.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    yield postgres_db().rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_db(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("latin1_side", ["source", "destination"])
def test_text_verifies_between_databases_of_other_encodings(postgres_db, latin1_db, latin1_side, caplog):
    """A LATIN1 destination stores other bytes than the UTF-8 stream, so its rows go through Arrow;
    a LATIN1 source sends UTF-8 all the same, so its rows stream."""
    source, destination = (latin1_db, postgres_db()) if latin1_side == "source" else (postgres_db(), latin1_db)
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("CREATE TABLE names (id integer PRIMARY KEY, name text, code char(4))")
        c.execute("INSERT INTO names SELECT g, 'Müller-Lüdenscheidt ' || g, 'ß' || (g % 10) FROM generate_series(1, 300) g")

    report = migrate_tables(source=source, destination=destination, tables=["names"], chunk_rows=100)

    assert report["verdict"] == "verified" and report["rows"] == 300
    assert ("binary COPY data without decoding" in caplog.text) == (latin1_side == "source")
    with psycopg.connect(destination) as c:
        assert c.execute("SELECT name, code FROM names WHERE id = 7").fetchone() == ("Müller-Lüdenscheidt 7", "ß7  ")
