"""A publish that stops halfway is still undone exactly: a failed ledger write right after the swap
or upsert, a ClickHouse swap stopped between its rename and its exchange, a ClickHouse upsert stopped
between its delete and its insert, and an undo that itself stopped halfway."""
from __future__ import annotations

import uuid

import pytest

from connectors.base import Column, MigrationError, TableSchema
from flows.migrate_tables import migrate_tables
from flows.rollback import rollback_migration
from tasks import state
from tasks.plan import work_table_name
from tasks.publish import _with_staging_id, restore
from tests.conftest import make_endpoint
from tests.helpers import create_table, execute_sql, open_url, read_rows, snapshot

ITEMS = TableSchema("items", (Column("id", "int64", nullable=False), Column("name", "string"),
                              Column("version", "int64")), ("id",))
FIRST = [{"id": i, "name": f"first {i}", "version": 1} for i in range(1, 9)]
# ids 2 and 4 changed, 9 and 10 new: what an incremental run upserts
SECOND = [{"id": i, "name": f"second {i}" if i in (2, 4, 9, 10) else f"first {i}",
           "version": 2 if i in (2, 4, 9, 10) else 1} for i in range(1, 11)]

# a real fault in the destination: it refuses the ledger record that says a table is published
REFUSE_PUBLISHED = {
    "postgres": [
        "CREATE FUNCTION refuse_published() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'published' THEN RAISE EXCEPTION 'ledger write refused'; END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER refuse BEFORE INSERT ON {state.LEDGER} FOR EACH ROW EXECUTE FUNCTION refuse_published()"],
    "mysql": [
        f"CREATE TRIGGER refuse BEFORE INSERT ON {state.LEDGER} FOR EACH ROW BEGIN IF NEW.status = 'published' "
        f"THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'ledger write refused'; END IF; END"],
    "sqlite": [
        f"CREATE TRIGGER refuse BEFORE INSERT ON {state.LEDGER} WHEN NEW.status = 'published' "
        f"BEGIN SELECT RAISE(ABORT, 'ledger write refused'); END"],
}


def _first_run(source: str, destination: str, mode: str) -> dict:
    """FIRST migrated from `source` into `destination`: returns the destination as it then is."""
    create_table(source, ITEMS, FIRST)
    _run(source, destination, mode)
    return snapshot(destination)


def _run(source: str, destination: str, mode: str) -> dict:
    return migrate_tables(source=source, destination=destination, tables=["items"], mode=mode,
                          watermark_column="version" if mode == "incremental" else None)


@pytest.mark.parametrize("mode", ["full", "incremental"])
@pytest.mark.parametrize("dst", ["postgres", "mysql", "sqlite"])
def test_a_run_whose_published_record_cannot_be_written_is_undone(request, sqlite_url, dst, mode):
    destination = make_endpoint(request, dst)
    before = _first_run(sqlite_url, destination, mode)
    create_table(sqlite_url, ITEMS, SECOND)
    execute_sql(destination, *REFUSE_PUBLISHED[dst])

    with pytest.raises(MigrationError, match="ledger write refused") as failed:
        _run(sqlite_url, destination, mode)

    assert not failed.value.transient  # a refusal is not retried

    assert snapshot(destination) == before  # the target as it was, and no work table left behind


class HalfPublished:
    """A run's publish of `items` into ClickHouse, done by hand up to a chosen statement."""

    def __init__(self, url: str, staged: list[dict]):
        self.url, self.run_id = url, str(uuid.uuid4())
        self.staging, self.backup = (work_table_name("items", role, self.run_id) for role in ("stage", "backup"))
        create_table(url, ITEMS.renamed(self.staging), staged)
        self.conn = open_url(url)

    def record_intent(self, mode: str) -> None:
        state.record(self.conn, run_id=self.run_id, table_name="items", mode=mode, target_existed=True,
                     staging=self.staging, backup=self.backup, key_column=state.encode_keys(["id"]),
                     staging_id=self.conn.table_id(self.staging) if mode == "full" else None, status="publishing")

    def close(self) -> None:
        self.conn.close()


def test_a_clickhouse_swap_stopped_between_rename_and_exchange_is_undone(sqlite_url, clickhouse_url):
    before = _first_run(sqlite_url, clickhouse_url, "full")
    run = HalfPublished(clickhouse_url, SECOND)
    run.record_intent("full")
    run.conn.execute(f"RENAME TABLE {run.conn.q(run.staging)} TO {run.conn.q(run.backup)}")  # swap_in's first step
    run.close()

    restore(clickhouse_url, run.run_id)

    assert snapshot(clickhouse_url) == before


def test_a_clickhouse_upsert_stopped_between_delete_and_insert_is_undone(sqlite_url, clickhouse_url):
    before = _first_run(sqlite_url, clickhouse_url, "incremental")
    run = HalfPublished(clickhouse_url, [r for r in SECOND if r["version"] == 2])
    run.conn.save_prior_rows("items", run.staging, run.backup, ["id"], None)
    run.record_intent("incremental")
    run.conn.execute(run.conn.upsert_statements("items", run.staging, ["id"], None)[0])  # the delete, not the insert
    run.close()
    assert len(read_rows(clickhouse_url, ITEMS)) == len(FIRST) - 2

    restore(clickhouse_url, run.run_id)

    assert snapshot(clickhouse_url) == before


def test_a_rollback_stopped_halfway_finishes_when_repeated(sqlite_url, clickhouse_url):
    before = _first_run(sqlite_url, clickhouse_url, "full")
    create_table(sqlite_url, ITEMS, SECOND)
    second = _run(sqlite_url, clickhouse_url, "full")
    backup, trash = (work_table_name("items", role, second["run_id"]) for role in ("backup", "undone"))
    conn = open_url(clickhouse_url)
    conn.execute(f"RENAME TABLE {conn.q(backup)} TO {conn.q(trash)}")  # the undo's swap_in, first step only
    conn.close()

    assert rollback_migration(destination=clickhouse_url, run_id=second["run_id"]) == ["items"]

    assert snapshot(clickhouse_url) == before


def test_a_clickhouse_run_recorded_by_an_earlier_release_rolls_back_even_after_a_stopped_undo(sqlite_url,
                                                                                               clickhouse_url):
    """Earlier releases did not record where a run's rows are; the first undo notes it before it moves them."""
    before = _first_run(sqlite_url, clickhouse_url, "full")
    create_table(sqlite_url, ITEMS, SECOND)
    second = _run(sqlite_url, clickhouse_url, "full")["run_id"]
    backup, trash = (work_table_name("items", role, second) for role in ("backup", "undone"))
    conn = open_url(clickhouse_url)
    conn.execute(f"ALTER TABLE {state.LEDGER} UPDATE staging_id = NULL WHERE 1 SETTINGS mutations_sync = 2")
    [legacy] = state.published(conn, second)
    assert legacy["staging_id"] is None
    _with_staging_id(conn, legacy)  # what undo does first
    conn.execute(f"RENAME TABLE {conn.q(backup)} TO {conn.q(trash)}")  # then its swap's first step, and a stop
    conn.close()

    rollback_migration(destination=clickhouse_url, run_id=second)

    assert snapshot(clickhouse_url) == before


@pytest.mark.parametrize("dst", ["sqlite", "postgres", "mysql", "clickhouse"])
def test_a_ledger_of_an_earlier_release_gains_the_new_column(request, sqlite_url, dst):
    destination = make_endpoint(request, dst)
    old = TableSchema(state.LEDGER, tuple(c for c in state.LEDGER_SCHEMA.columns if c.name != "staging_id"))
    create_table(destination, old, [])
    create_table(sqlite_url, ITEMS, FIRST)

    run = _run(sqlite_url, destination, "full")

    assert read_rows(destination, ITEMS) == read_rows(sqlite_url, ITEMS)
    conn = open_url(destination)
    assert "staging_id" in conn.describe(state.LEDGER).column_names
    conn.close()
    rollback_migration(destination=destination, run_id=run["run_id"])
    assert snapshot(destination) == {}
