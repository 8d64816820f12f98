"""rollback-migration: return a destination to exactly its state before a finished run."""
from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.concurrency import destination_lock
from tasks.connections import close_all
from tasks.publish import rollback_run


@flow(name="rollback-migration")
def rollback_migration(destination: str, run_id: str) -> list[str]:
    log = get_run_logger()
    try:
        with destination_lock(destination, 1, log):  # alone: never beside a run loading this destination
            restored = rollback_run(destination, run_id)
    finally:
        close_all()
    log.info("Run %s rolled back; restored %s", run_id, ", ".join(restored))
    return restored
