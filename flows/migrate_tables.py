"""migrate-tables: copy tables between two endpoints, verified, published atomically, reversible.

Order of work: a slot on the destination -> connect-test -> plan (types, chunks) -> staging
tables -> extract/load per chunk with verify right behind it -> (incremental) deleted keys ->
publish every table -> report. Any failure after staging began drops the staging tables and
undoes whatever this run already published, so the destination ends exactly as it was.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from connectors.base import MigrationError
from connectors.canonical import Checksum, needs_json_canonical
from tasks.concurrency import destination_lock
from tasks.memory import limit_malloc_arenas, release_free_memory
from tasks.connections import close_all, using
from tasks.copy import ChunkResult, copy_chunk
from tasks.plan import TablePlan
from tasks.prepare import connect_test, create_staging, find_deleted, index_staging, plan_table
from tasks.publish import publish, restore
from tasks.verify import verify_chunk

MAX_PARALLEL = 8
LOG_INTERVAL = 5.0  # seconds between progress lines in the run's log


def _restore_stopped_run(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed: a run stopped from outside leaves the destination as it was
    before the run, and no work tables behind."""
    destination = (flow_run.parameters or {}).get("destination")
    if destination:
        restore(destination, str(flow_run.id))


@flow(name="migrate-tables", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL), log_prints=False,
      on_cancellation=[_restore_stopped_run], on_crashed=[_restore_stopped_run])
def migrate_tables(
    source: str,
    destination: str,
    tables: list[str] | None = None,
    mode: Literal["full", "incremental"] = "full",
    watermark_column: str | None = None,
    detect_deletes: bool = False,
    lossy_casts: list[str] | None = None,
    target_prefix: str = "",
    chunk_rows: int = 250_000,
    parallel: int = 2,
    verify: bool = True,
    destination_slots: int = 1,
) -> dict:
    """Migrate `tables` (default: all) from `source` to `destination`.

    `source` and `destination` are endpoint references: a block ("sqlalchemy-connector/name",
    "clickhouse-endpoint/name"), "env:VAR", or a URL without a password. At most
    `destination_slots` runs load the same destination at once; others wait their turn.
    """
    log = get_run_logger()
    if mode not in ("full", "incremental"):
        raise MigrationError(f"mode must be 'full' or 'incremental', not {mode!r}")
    if mode == "incremental" and not watermark_column:
        raise MigrationError("incremental mode needs watermark_column (a column that grows when a row changes)")
    run_id = str(flow_run.id or uuid.uuid4())
    started = time.perf_counter()
    limit_malloc_arenas()
    try:
        # the slot comes first: its API call then never races the temporary Prefect server's SQLite
        # writes of a just-finished task's events, which answer 503 and cost a 2 s retry
        with destination_lock(destination, destination_slots, log):
            names = connect_test(source, destination, tables)
            log.info("Both endpoints answer; migrating %d table(s): %s", len(names), ", ".join(names))
            report = _plan_and_migrate(source, destination, names, run_id, mode, watermark_column, detect_deletes,
                                       lossy_casts or [], target_prefix, chunk_rows, parallel, verify, log)
    finally:
        close_all()
    report["run_id"] = run_id
    report["seconds"] = round(time.perf_counter() - started, 3)
    _publish_report(report)
    log.info("Done: %d rows in %.1f s; verdict %s", report["rows"], report["seconds"], report["verdict"])
    return report


def _plan_and_migrate(source, destination, names, run_id, mode, watermark_column, detect_deletes, casts,
                      target_prefix, chunk_rows, parallel, verify, log) -> dict:
    plans = [plan_table(source, destination, t, target_prefix + t, run_id, mode, watermark_column, casts, chunk_rows)
             for t in names]
    for p in plans:
        if p.casts:
            log.warning("Table %s: lossy casts applied: %s", p.table, p.casts)
        if p.chunks[0].key is None and p.source_schema.chunk_key is None:
            log.info("Table %s: its primary key does not begin with an integer column, nor with text both engines "
                     "compare byte by byte, so it is copied and verified as one chunk (no parallelism or progress "
                     "within it)", p.table)
    # a backup exists without a ledger record only when a publish stopped before its first record
    work_tables = [p.staging for p in plans] + [p.backup for p in plans]
    try:
        return _copy_verify_publish(source, destination, plans, run_id, mode, detect_deletes,
                                    max(1, min(parallel, MAX_PARALLEL)), verify, work_tables, log)
    except BaseException:
        log.error("Run failed; restoring the destination to its state before the run")
        restore(destination, run_id, work_tables)
        raise


def _copy_verify_publish(source, destination, plans: list[TablePlan], run_id, mode, detect_deletes,
                         parallel, verify, work_tables, log) -> dict:
    for p in plans:
        p.raw_stream = create_staging(source, destination, p)
        if p.raw_stream:
            log.info("Table %s: same column types on both PostgreSQL servers; rows move as binary COPY data "
                     "without decoding, hashed on their way and verified against the destination server's row hash", p.table)
    json_canonical = _json_canonical(source, destination)
    stats = {p.table: TableStats() for p in plans}
    progress = Progress(sum(len(p.chunks) for p in plans) * (2 if verify else 1), len(plans))

    news = Every(LOG_INTERVAL)

    def copied(p: TablePlan, result: ChunkResult) -> None:
        table = stats[p.table]
        table.add(result)
        progress.step()
        release_free_memory()
        if table.chunks == len(p.chunks) or news.due():  # a line per chunk costs ~2 ms and floods long runs
            log.info("Table %s: %d of %d chunk(s) copied, %d rows so far", p.table, table.chunks, len(p.chunks),
                     table.rows)

    chunks = [(p, c) for p in plans for c in p.chunks]
    slim = {p.table: p.without_chunks() for p in plans}
    for p in plans:
        stats[p.table].start()
    results = _windowed(chunks, lambda p, c: copy_chunk.submit(source, destination, slim[p.table], c, verify),
                        copied, parallel)
    for p in plans:
        index_staging(destination, p)
    if verify:
        def verified(p: TablePlan, checksum: Checksum) -> None:
            stats[p.table].verified(checksum)
            progress.step()
            release_free_memory()
        _windowed(results, lambda p, r: verify_chunk.submit(source, destination, slim[p.table], r, json_canonical),
                  verified, parallel)
        log.info("Every chunk verified: row counts and checksums match on both sides")
    deletions = {}
    if mode == "incremental" and detect_deletes:
        for p in plans:
            if p.target_existed:
                deletions[p.table] = find_deleted(source, destination, p, run_id)
                if deletions[p.table][0]:
                    work_tables.append(deletions[p.table][0])
    for p in plans:
        publish(destination, p, run_id, deletions.get(p.table, (None, 0))[0], p.watermark_upto)
    return _report(plans, stats, deletions, verify)


def _windowed(items: list, submit, on_done, parallel: int) -> list:
    """Run submit(plan, item) for every (plan, item), at most `parallel` at once; returns (plan, result) pairs."""
    pending, in_flight, results = list(items), {}, []
    while pending or in_flight:
        while pending and len(in_flight) < parallel:
            plan, item = pending.pop(0)
            fut = submit(plan, item)
            in_flight[fut] = plan
        fut = next(as_completed(list(in_flight)))  # works for thread and Dask futures alike
        plan = in_flight.pop(fut)
        result = fut.result()  # raises the task's error, after its retries
        on_done(plan, result)
        results.append((plan, result))
    return results


class Every:
    """due() is true at most once per `seconds` (and the first time it is asked)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, -seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


class Progress:
    """The run's progress artifact, advanced one step per chunk copied and per chunk verified.

    The artifact is written at most once a second (and at the end): each write is an API call.
    """

    def __init__(self, steps: int, tables: int):
        self.steps, self.done, self.writes = max(steps, 1), 0, Every(1.0)
        self.id = create_progress_artifact(progress=0.0, description=f"chunks of {tables} table(s) copied and verified")

    def step(self) -> None:
        self.done += 1
        if self.writes.due() or self.done == self.steps:
            update_progress_artifact(self.id, progress=round(100.0 * self.done / self.steps, 1))


class TableStats:
    """Rows, bytes, checksum and wall time of one table's chunks."""

    def __init__(self):
        self.rows = self.bytes = self.chunks = 0
        self.checksum = Checksum()
        self.started = self.finished = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def add(self, copied: ChunkResult) -> None:
        self.rows += copied.rows
        self.bytes += copied.bytes
        self.chunks += 1
        self.finished = time.perf_counter()

    def verified(self, checksum: Checksum) -> None:
        """The table's checksum is the sum of what verify found on the destination, chunk by chunk."""
        self.checksum.merge(checksum)

    @property
    def seconds(self) -> float:
        return (self.finished - self.started) if self.finished and self.started else 0.0


def _json_canonical(source: str, destination: str) -> bool:
    with using(source, destination) as (s, d):
        return needs_json_canonical(s, d)


def _report(plans, stats, deletions, verified) -> dict:
    verdict = "verified" if verified else "copied (not verified)"
    rows = []
    for p in plans:
        s = stats[p.table]
        rows.append({
            "table": p.table, "target": p.target, "mode": p.mode if p.target_existed else "full",
            "rows": s.rows, "deleted": deletions.get(p.table, (None, 0))[1], "bytes": s.bytes,
            "seconds": round(s.seconds, 3), "rows_per_s": round(s.rows / s.seconds) if s.seconds else 0,
            "checksum": f"{s.checksum.total:016x}", "verdict": verdict,
        })
    return {"tables": rows, "rows": sum(r["rows"] for r in rows), "verdict": verdict}


def _publish_report(report: dict) -> None:
    create_table_artifact(key="migration-report", table=report["tables"],
                          description=f"run {report['run_id']}: {report['rows']} rows, {report['verdict']}")

