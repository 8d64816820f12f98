"""Publishing verified staging tables, and undoing that: the swap, the upsert, and rollback."""
from __future__ import annotations

import contextlib

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.base import Connector, MigrationError, TransientError
from tasks import state
from tasks.connections import using
from tasks.plan import TablePlan, work_table_name
from tasks.retry import RETRY_POLICY, is_transient


@task(name="publish", cache_policy=NO_CACHE, task_run_name="publish {plan.target}")
def publish(dest_ref: str, plan: TablePlan, run_id: str, deleted: str | None, watermark) -> None:
    """Full: swap staging in atomically, the old table kept as backup. Incremental: upsert, prior rows kept.

    The ledger says "publishing" before the target changes and "published" after, so a run stopped
    in between (or whose second ledger write fails) is still undone by `undo`.
    """
    with using(dest_ref) as (dest,):
        entry = dict(run_id=run_id, table_name=plan.target, target_existed=plan.target_existed, staging=plan.staging,
                     backup=plan.backup if plan.target_existed else None, deleted=deleted,
                     key_column=state.encode_keys(plan.source_schema.primary_key), watermark_column=plan.watermark,
                     watermark=state.encode_watermark(watermark))
        if plan.mode == "full" or not plan.target_existed:
            entry.update(mode="full", staging_id=dest.table_id(plan.staging))
            state.record(dest, **entry, status="publishing")
            dest.swap_in(plan.staging, plan.target, entry["backup"])
        else:
            entry.update(mode="incremental")
            keys = plan.source_schema.primary_key
            dest.save_prior_rows(plan.target, plan.staging, plan.backup, keys, deleted)
            state.record(dest, **entry, status="publishing")  # from here undo_upsert restores the target
            dest.apply_upsert(plan.target, plan.staging, keys, deleted)
        state.record(dest, **entry, status="published")


def undo(dest: Connector, rec: dict, run_id: str) -> None:
    """Return one table to exactly its state before the run, from its latest ledger record: also
    right for a publish that stopped halfway, and when repeated after an undo that stopped halfway."""
    if rec["mode"] == "full":
        _undo_swap(dest, _with_staging_id(dest, rec), work_table_name(rec["table_name"], "undone", run_id))
    else:
        _undo_upsert(dest, rec)
    state.record(dest, run_id=run_id, table_name=rec["table_name"], mode=rec["mode"], status="rolled_back")


# Where a full run's rows are, by how far its publish (rename staging -> backup, exchange) and its
# undo (rename backup -> trash, exchange, drop trash) got; one atomic step each outside ClickHouse:
#   staging            publish never began         nothing to do
#   backup             publish stopped halfway     drop backup (the target still has its old rows)
#   target, backup     published                   swap the backup back in, drop trash
#   target, no backup  undo stopped halfway        swap trash back in, drop what comes out
#   trash              undone but for the drop     drop trash
#   nowhere            undone                      nothing to do
def _undo_swap(dest: Connector, rec: dict, trash: str) -> None:
    target, backup = rec["table_name"], rec["backup"]
    at = _swapped_rows_at(dest, rec, trash)
    if at in (None, rec["staging"]):
        return
    if at in (backup, trash):
        dest.drop_table(at)
    elif at != target:
        raise MigrationError(f"table {target!r}: the rows run {rec['run_id']} published are now in table {at!r}, "
                             f"renamed since; nothing was undone")
    elif not backup:
        dest.drop_table(target)  # the run created it
    elif dest.table_exists(backup):
        dest.swap_in(backup, target, trash)
        dest.drop_table(trash)
    else:
        dest.swap_in(trash, target, backup)
        dest.drop_table(backup)


def _swapped_rows_at(dest: Connector, rec: dict, trash: str) -> str | None:
    """Which table now holds the rows the run swapped in (see the table above), or None."""
    if rec.get("staging_id"):
        return dest.table_named_by_id(rec["staging_id"])
    # an engine whose swap is one atomic statement: the names tell
    if dest.table_exists(rec["staging"]):
        return rec["staging"]
    if not rec["backup"] or dest.table_exists(rec["backup"]):
        return rec["table_name"] if dest.table_exists(rec["table_name"]) else None
    return trash if dest.table_exists(trash) else None


def _with_staging_id(dest: Connector, rec: dict) -> dict:
    """A published ClickHouse table recorded by an earlier release, without the id of its rows:
    note that id (now the target's) before an undo in two steps moves them."""
    if rec.get("staging_id") or not rec["backup"] or rec["status"] != "published" or not dest.table_exists(rec["backup"]):
        return rec
    table_id = dest.table_id(rec["table_name"])
    if table_id is None:
        return rec
    rec = {k: v for k, v in rec.items() if k != "recorded_at"} | {"staging_id": table_id}
    state.record(dest, **rec)
    return rec


def _undo_upsert(dest: Connector, rec: dict) -> None:
    if dest.table_exists(rec["backup"]):  # dropped first once the target is restored
        dest.undo_upsert(rec["table_name"], rec["staging"], rec["backup"], state.decode_keys(rec["key_column"]))
    for t in (rec["backup"], rec["staging"], rec["deleted"]):
        if t:
            dest.drop_table(t)


@task(name="rollback", cache_policy=NO_CACHE, **RETRY_POLICY)
def rollback_run(dest_ref: str, run_id: str) -> list[str]:
    """Undo every table a finished run published, newest first. Returns the tables restored."""
    with using(dest_ref) as (dest,):
        recs = state.published(dest, run_id)
        if not recs:
            raise MigrationError(f"{dest_ref}: run {run_id} has nothing to roll back (unknown run, or already rolled back)")
        later = state.published_later(dest, run_id)
        if later:
            table, newer = next(iter(later.items()))
            raise MigrationError(f"{dest_ref}: table {table!r} was published again by run {newer} after run "
                                 f"{run_id}; roll back {newer} first (newest first), else its rows would be lost. "
                                 f"Nothing was rolled back")
        _restore(dest, run_id)
        return [r["table_name"] for r in recs]


def restore(dest_ref: str, run_id: str, work_tables: list[str] | None = None) -> None:
    """Return the destination to its state before run `run_id` (a run that failed or was stopped):
    undo every table it published, then drop its work tables (None: those carrying the run's id in
    their names)."""
    with using(dest_ref) as (dest,):
        _restore(dest, run_id, work_tables)


def _restore(dest: Connector, run_id: str, work_tables: list[str] | None = None) -> None:
    """Undo each table `run_id` published, newest first and each on its own so one failing does not
    stop the others; then drop `work_tables` (None: the run's, found by name), but for those a table
    not undone still needs."""
    failed = []
    for rec in reversed(state.published(dest, run_id)):
        try:
            undo(dest, rec, run_id)
        except Exception as exc:
            failed.append((rec, exc))
    kept = {t for rec, _ in failed for t in (rec["staging"], rec["backup"], rec["deleted"]) if t}
    for t in _run_work_tables(dest, run_id) if work_tables is None else work_tables:
        if t not in kept:
            with contextlib.suppress(MigrationError):
                dest.drop_table(t)
    if failed:
        error = TransientError if all(is_transient(exc) for _, exc in failed) else MigrationError  # rollback retries
        raise error(f"run {run_id}: could not restore {', '.join(rec['table_name'] for rec, _ in failed)} "
                    f"({'; '.join(str(exc) for _, exc in failed)}); its work tables are kept: "
                    f"retry with `migration-assistant rollback DESTINATION {run_id}`")


def _run_work_tables(dest: Connector, run_id: str) -> list[str]:
    """The staging, backup and deleted-keys tables of a run (they carry its id in their name)."""
    suffixes = tuple(work_table_name("", role, run_id) for role in ("stage", "backup", "deleted"))
    return [t for t in dest.list_tables() if t.endswith(suffixes)]
