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
    """The source hash of each chunk is taken in the snapshot its COPY read, so rows changed after
    their chunk was copied do not fail verification; what arrived is a version each row had."""
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
