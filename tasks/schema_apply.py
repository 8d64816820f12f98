"""Apply (or roll back) a schema-migration script on one target, and keep its history there.

Statements run with a lock timeout and a statement timeout. On engines with transactional DDL,
consecutive statements that may share a transaction run in one; statements the engine refuses
inside a transaction (CREATE INDEX CONCURRENTLY ...) run on their own, outside one. A lock
timeout (or a lost connection) retries the group after a growing pause, up to `lock_retries` times.

Every target holds `_schema_migration_history`: one row per event (`applied`, `rolled_back`)
with the migration name, the script's checksum, when, by whom, the execution (flow run) id,
the phase and, for rollbacks, why. Applying a migration whose last event is `applied` is refused
(`AlreadyApplied`, HTTP 409) unless forced; the same name with a different script is reported
as `ScriptChanged` (also 409).
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.base import DdlFailed, MigrationError
from connectors.sql import HISTORY_COLUMNS
from tasks.connections import using
from tasks.schema_validate import ScriptError, Statement, locate, script_checksum, split_statements

HISTORY_TABLE = "_schema_migration_history"


class AlreadyApplied(MigrationError):
    """The migration is applied on this target already (HTTP 409)."""

    conflict = True


class ScriptChanged(AlreadyApplied):
    """A migration of this name was applied with a different script (HTTP 409)."""


class ApplyFailed(MigrationError):
    """A statement failed. `committed` statements of the script stayed applied (non-transactional
    statements before it); `error` locates the statement in the script."""

    def __init__(self, message: str, error: ScriptError, committed: int):
        super().__init__(message)
        self.error, self.committed = error, committed


@dataclass(frozen=True)
class Safety:
    """How statements run: lock timeout (seconds), statement timeout (seconds), lock retries."""

    lock_timeout_s: float = 5.0
    statement_timeout_s: float = 900.0
    lock_retries: int = 3
    retry_delay_s: float = 1.0


# --- history ----------------------------------------------------------------------------
def history(conn, migration_name: str | None = None) -> list[dict]:
    """The target's history rows (oldest first), for one migration or all."""
    if not conn.table_exists(HISTORY_TABLE):
        return []
    cols = ", ".join(conn.q(c) for c in HISTORY_COLUMNS)
    where, params = ("", []) if migration_name is None else (f" WHERE {conn.q('migration_name')} = {conn.param}",
                                                            [migration_name])
    rows = conn.query(f"SELECT {cols} FROM {conn.q(HISTORY_TABLE)}{where} ORDER BY {conn.q('applied_at')}", params)
    return [dict(zip(HISTORY_COLUMNS, r)) for r in rows]


def record(conn, migration_name: str, checksum: str, action: str, by: str, execution_id: str, phase: str,
           reason: str = "") -> None:
    conn.create_history_table(HISTORY_TABLE)
    now = conn.watermark_param(dt.datetime.now(dt.timezone.utc))
    values = [migration_name, checksum, action, now, by, execution_id, phase, reason]
    conn.execute(f"INSERT INTO {conn.q(HISTORY_TABLE)} ({', '.join(conn.q(c) for c in HISTORY_COLUMNS)}) "
                 f"VALUES ({', '.join([conn.param] * len(values))})", values)


def check_not_applied(conn, migration_name: str, checksum: str, force: bool = False) -> None:
    """Raise AlreadyApplied / ScriptChanged unless the migration is not applied here (or `force`)."""
    events = history(conn, migration_name)
    applied = [e for e in events if e["action"] == "applied"]
    if force or not applied:
        return
    if any(e["checksum"] != checksum for e in applied):
        raise ScriptChanged(f"{conn.endpoint.label}: migration {migration_name!r} was applied with a different "
                            f"script (checksum {applied[-1]['checksum'][:12]}, now {checksum[:12]}); "
                            "give the changed script a new name, or force it")
    if events[-1]["action"] == "applied":
        raise AlreadyApplied(f"{conn.endpoint.label}: migration {migration_name!r} is applied already "
                             f"(execution {events[-1]['execution_id']}, {events[-1]['applied_at']}); force to re-apply")


# --- running statements -------------------------------------------------------------------
def _groups(conn, statements: list[Statement]) -> list[tuple[bool, list[Statement]]]:
    """(in_transaction, statements): consecutive transactional statements together, others alone."""
    groups: list[tuple[bool, list[Statement]]] = []
    for stmt in statements:
        alone = not conn.transactional_ddl or conn.runs_outside_transaction(stmt.text)
        if alone or not groups or not groups[-1][0]:
            groups.append((not alone, [stmt]))
        else:
            groups[-1][1].append(stmt)
    return groups


def run_script(conn, script: str, which: str, safety: Safety, log=None) -> dict:
    """Run `script` on `conn` with `safety`; returns {"statements", "seconds", "retries"}."""
    statements, errors = split_statements(script, conn.sqlglot_dialect, which)
    if errors:
        raise ApplyFailed(f"{conn.endpoint.label}: {errors[0].message}", errors[0], 0)
    started, committed, retries = time.monotonic(), 0, 0
    for in_tx, group in _groups(conn, statements):
        for attempt in range(safety.lock_retries + 1):
            try:
                conn.run_ddl([s.text for s in group], in_tx, safety.lock_timeout_s, safety.statement_timeout_s)
                break
            except DdlFailed as exc:
                failed = group[exc.index] if exc.index is not None else group[0]
                if not in_tx:
                    conn.cleanup_failed(failed.text)
                if exc.transient and attempt < safety.lock_retries:
                    retries += 1
                    if log:
                        log.warning("%s: %s; retry %d/%d", conn.endpoint.label, exc.detail, attempt + 1,
                                    safety.lock_retries)
                    time.sleep(safety.retry_delay_s * 2 ** attempt)
                    continue
                line, col = locate(failed, position=exc.position, line=exc.line)
                partial = committed + (0 if in_tx else (exc.index or 0))
                raise ApplyFailed(f"{conn.endpoint.label}: {which} line {line}: {exc.detail}",
                                  ScriptError(which, exc.detail, line, col), partial) from None
        committed += len(group)
    return {"statements": committed, "seconds": round(time.monotonic() - started, 3), "retries": retries}


@task(name="check-history", task_run_name="check-history [{phase}]", cache_policy=NO_CACHE)
def check_history(endpoint_ref: str, migration_name: str, script: str, phase: str, force: bool = False) -> None:
    """Refuse early (AlreadyApplied / ScriptChanged) when the target's history says so."""
    with using(endpoint_ref) as (conn,):
        check_not_applied(conn, migration_name, script_checksum(script), force)


@task(name="apply", task_run_name="apply [{phase}]", cache_policy=NO_CACHE)
def apply_phase(endpoint_ref: str, migration_name: str, script: str, phase: str, execution_id: str,
                applied_by: str, force: bool = False, safety: Safety = Safety()) -> dict:
    """Apply `script` on one phase's target and record it; raises AlreadyApplied/ScriptChanged/ApplyFailed."""
    from prefect import get_run_logger
    checksum = script_checksum(script)
    with using(endpoint_ref) as (conn,):
        check_not_applied(conn, migration_name, checksum, force)
        done = run_script(conn, script, "migrationScript", safety, get_run_logger())
        record(conn, migration_name, checksum, "applied", applied_by, execution_id, phase)
    return {"phase": phase, **done}


@task(name="rollback", task_run_name="rollback [{phase}]", cache_policy=NO_CACHE)
def rollback_phase(endpoint_ref: str, migration_name: str, script: str, rollback_script: str, phase: str,
                   execution_id: str, by: str, reason: str, safety: Safety = Safety()) -> dict:
    """Run the rollback script on one phase's target and record why."""
    from prefect import get_run_logger
    with using(endpoint_ref) as (conn,):
        done = run_script(conn, rollback_script, "rollbackScript", safety, get_run_logger())
        record(conn, migration_name, script_checksum(script), "rolled_back", by, execution_id, phase, reason[:2000])
    return {"phase": phase, **done}


def applied_phases(endpoint_ref: str, migration_name: str, execution_id: str) -> bool:
    """Whether the last history event of `migration_name` on this target is `applied` by `execution_id`."""
    with using(endpoint_ref) as (conn,):
        events = history(conn, migration_name)
    return bool(events) and events[-1]["action"] == "applied" and events[-1]["execution_id"] == execution_id
