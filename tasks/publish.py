"""Publishing verified staging tables, and undoing that: the swap, the upsert, and rollback."""
from __future__ import annotations

import contextlib

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.base import Connector, MigrationError
from tasks import state
from tasks.connections import using
from tasks.plan import TablePlan, work_table_name
from tasks.retry import RETRY_POLICY


@task(name="publish", cache_policy=NO_CACHE, task_run_name="publish {plan.target}")
def publish(dest_ref: str, plan: TablePlan, run_id: str, deleted: str | None, watermark) -> None:
    """Full: swap staging in atomically, the old table kept as backup. Incremental: upsert, prior rows kept."""
    with using(dest_ref) as (dest,):
        if plan.mode == "full" or not plan.target_existed:
            dest.swap_in(plan.staging, plan.target, plan.backup if plan.target_existed else None)
            kind = "full"
        else:
            dest.apply_upsert(plan.target, plan.staging, plan.backup, plan.source_schema.primary_key, deleted)
            kind = "incremental"
        state.record(dest, run_id=run_id, table_name=plan.target, mode=kind, target_existed=plan.target_existed,
                     backup=plan.backup if plan.target_existed else None, staging=plan.staging, deleted=deleted,
                     key_column=state.encode_keys(plan.source_schema.primary_key), watermark_column=plan.watermark,
                     watermark=state.encode_watermark(watermark), status="published")


def undo(dest: Connector, rec: dict, run_id: str) -> None:
    """Return one published table to exactly its state before the run."""
    target = rec["table_name"]
    if rec["mode"] == "full":
        if rec["target_existed"]:
            trash = work_table_name(target, "undone", run_id)
            dest.swap_in(rec["backup"], target, trash)
            dest.drop_table(trash)
        else:
            dest.drop_table(target)
    else:
        dest.undo_upsert(target, rec["staging"], rec["backup"], state.decode_keys(rec["key_column"]))
        for t in (rec["staging"], rec["backup"], rec["deleted"]):
            if t:
                dest.drop_table(t)
    state.record(dest, run_id=run_id, table_name=target, mode=rec["mode"], status="rolled_back")


@task(name="rollback", cache_policy=NO_CACHE, **RETRY_POLICY)
def rollback_run(dest_ref: str, run_id: str) -> list[str]:
    """Undo every table a finished run published, newest first. Returns the tables restored."""
    with using(dest_ref) as (dest,):
        recs = state.published(dest, run_id)
        if not recs:
            raise MigrationError(f"{dest_ref}: run {run_id} has nothing to roll back (unknown run, or already rolled back)")
        for rec in reversed(recs):
            undo(dest, rec, run_id)
        return [r["table_name"] for r in recs]


@task(name="discard-staging", cache_policy=NO_CACHE, **RETRY_POLICY)
def discard(dest_ref: str, tables: list[str]) -> None:
    """Drop the work tables of a run that did not finish; the destination's own tables are untouched."""
    with using(dest_ref) as (dest,):
        for t in tables:
            with contextlib.suppress(MigrationError):
                dest.drop_table(t)


def drop_run_work_tables(dest_ref: str, run_id: str) -> list[str]:
    """Drop the staging and deleted-keys tables of an unfinished run (they carry its id in their name)."""
    tag = run_id.replace("-", "")[:8]
    with using(dest_ref) as (dest,):
        doomed = [t for t in dest.list_tables() if t.endswith((f"__stage_{tag}", f"__deleted_{tag}"))]
        for t in doomed:
            dest.drop_table(t)
    return doomed
