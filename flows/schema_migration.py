"""schema-migration and schema-rollback: DDL over phases (replicas, then master), with approval.

An execution IS a flow run of `schema-migration`; its id is the execution id.

    schema_migration(migration_name, script, rollback_script, phases=[{"name": "replica-1",
                     "endpoint": "sqlalchemy-connector/replica-1"}, {"name": "master", ...}],
                     author="dev@example.com", environment="Production")

1. validate on every phase's target (`tasks.schema_validate`): syntax with line and column,
   references, risk, duration estimate, and a dry run that leaves nothing behind. Invalid: Failed.
   `dry_run=True` stops here (final state Completed, named "Validated").
2. approval when `require_approval` (default: from risk and environment, see
   `tasks.schema_validate.approval_required`): the run waits for an `Approval` input. Run from a
   deployment it is *suspended* (no process is held; the worker re-runs it from the top after the
   resume, validation comes back from its persisted result); run in-process it is paused. A
   reviewer equal to the author is refused and the run waits again. No answer within
   `approval_timeout_seconds` (default 7 days): the server fails the run ("The flow was paused
   and never resumed."), and `submit_decision` refuses late answers with ApprovalExpired.
   Rejected: final state Cancelled, named "Rejected".
3. each phase in order: measure (probes), apply (`tasks.schema_apply`), measure again, compare
   (`tasks.probes.Thresholds`, default +60% latency). A failed statement, a refused re-apply or a
   threshold breach rolls back every phase applied so far, in reverse order, with the rollback
   script, records why in each target's history, and ends Failed, named "RolledBack".

The report (returned, and the `schema-migration-report` table artifact) holds per phase the
baseline and after metrics, the apply timings and the breaches. While running, the progress
artifact's description names the current phase and step.

`schema_rollback(execution_id, reason)` undoes a finished execution (phases that its run applied,
in reverse order) and reports the rollback's duration.

The approval is answered with `submit_decision(execution_id, reviewer, approved, notes)`, which
is `prefect.flow_runs.resume_flow_run(execution_id, run_input={"approved": ..., "reviewer": ...,
"notes": ...})` after checking that the run waits and has not expired.
"""
from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import asdict
from uuid import UUID

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed
from pydantic import BaseModel

from connectors.base import MigrationError
from tasks.connections import close_all
from tasks.probes import DEFAULT_ITERATIONS, Measurement, Thresholds, breaches, measure
from tasks.schema_apply import (
    AlreadyApplied, ApplyFailed, Safety, applied_phases, apply_phase, check_history, rollback_phase,
)
from tasks.schema_validate import LARGE_TABLE_ROWS, approval_required, max_risk, validate

APPROVAL_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_APPROVAL_ROUNDS = 5  # refused self-approvals before the run gives up


class Phase(BaseModel):
    """One step of the rollout: a name (replica-1, master) and the database block it targets.
    `probes`: read queries to time before and after (default: the engine's, plus the touched tables)."""

    name: str
    endpoint: str
    probes: list[str] | None = None


class Approval(RunInput):
    """The input an approval resumes the run with."""

    approved: bool
    reviewer: str
    notes: str = ""


class ApprovalExpired(MigrationError):
    pass


@task(name="request-approval", persist_result=True)
def request_approval(timeout_seconds: int, risk_level: str, environment: str) -> str:
    """When the approval expires (ISO time). Persisted, so a re-run after the resume keeps it."""
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=timeout_seconds)
    get_run_logger().info("Approval required (risk %s, environment %s); expires at %s", risk_level, environment,
                          expires.isoformat())
    return expires.isoformat()


def _await_approval(author: str, timeout_seconds: int, risk_level: str, environment: str) -> Approval:
    log = get_run_logger()
    expires = dt.datetime.fromisoformat(request_approval(timeout_seconds, risk_level, environment))
    # only a deployed run can be re-run by a worker after the resume; others pause in-process
    suspend = FlowRunContext.get().flow_run.deployment_id is not None
    for round_ in range(1, MAX_APPROVAL_ROUNDS + 1):
        left = max(1, math.ceil((expires - dt.datetime.now(dt.timezone.utc)).total_seconds()))
        try:
            if suspend:
                answer = suspend_flow_run(wait_for_input=Approval, timeout=left, key=f"approval-{round_}")
            else:
                answer = pause_flow_run(wait_for_input=Approval, timeout=left, poll_interval=2, key=f"approval-{round_}")
        except Exception as exc:
            if type(exc).__name__ == "FlowPauseTimeout":
                raise ApprovalExpired(f"approval expired at {expires.isoformat()} without an answer") from None
            raise
        if answer.reviewer.strip().lower() == author.strip().lower():
            log.warning("Self-approval refused: %s wrote this migration; waiting for another reviewer", answer.reviewer)
            continue
        return answer
    raise MigrationError(f"approval refused {MAX_APPROVAL_ROUNDS} times: the author cannot approve their own migration")


class _Progress:
    def __init__(self, steps: int):
        self.steps, self.done = max(steps, 1), 0
        self.id = create_progress_artifact(progress=0.0, key="schema-migration-progress", description="validating")

    def step(self, description: str, advance: bool = True) -> None:
        self.done += advance
        update_progress_artifact(self.id, progress=round(100 * self.done / self.steps, 1), description=description)


def _publish(report: dict) -> None:
    rows = [{"phase": p["name"], "status": p["status"], **{f"before_{k}": v for k, v in (p.get("baseline") or {}).items()},
             **{f"after_{k}": v for k, v in (p.get("after") or {}).items()}, "breaches": "; ".join(p.get("breaches", []))}
            for p in report["phases"]]
    create_table_artifact(key="schema-migration-report", table=rows or [{"phase": "-", "status": report["status"]}],
                          description=f"{report['migration_name']}: {report['status']}. {report.get('reason') or ''}")


def _metrics(m: dict | None) -> dict | None:
    return None if m is None else Measurement(**m).contract()


@flow(name="schema-migration", persist_result=True, log_prints=True)
def schema_migration(
    migration_name: str,
    script: str,
    rollback_script: str,
    phases: list[Phase],
    author: str,
    environment: str = "Development",
    require_approval: bool | None = None,
    approval_timeout_seconds: int = APPROVAL_TIMEOUT_SECONDS,
    dry_run: bool = False,
    force: bool = False,
    thresholds: dict | None = None,
    lock_timeout_seconds: float = 5.0,
    statement_timeout_seconds: float = 900.0,
    lock_retries: int = 3,
    probe_iterations: int = DEFAULT_ITERATIONS,
    large_table_rows: int = LARGE_TABLE_ROWS,
):
    """Validate, get approval if needed, apply phase by phase, roll everything back on a failure
    or a regression. Parameters name database blocks (Phase.endpoint), never credentials.
    `thresholds`: fields of tasks.probes.Thresholds (latency_increase_pct, min_latency_increase_ms,
    p99_increase_pct, max_replication_lag_seconds, max_probe_errors). Returns the report (see module doc)."""
    log = get_run_logger()
    phases = [p if isinstance(p, Phase) else Phase(**p) for p in phases]
    if not phases:
        raise MigrationError("no phases: give at least one {name, endpoint}")
    limits = Thresholds(**(thresholds or {}))
    safety = Safety(lock_timeout_seconds, statement_timeout_seconds, lock_retries)
    execution_id = str(runtime.flow_run.id)
    report = {"execution_id": execution_id, "migration_name": migration_name, "status": "Running", "reason": None,
              "environment": environment, "author": author, "phases": [], "validation": {}, "approval": None}
    progress = _Progress(2 + 3 * len(phases))
    try:
        try:
            for p in phases:
                check_history(p.endpoint, migration_name, script, p.name, force)
        except AlreadyApplied as exc:
            report.update(status="Failed", reason=str(exc), conflict=True)
            _publish(report)
            return Failed(message=report["reason"], data=report)
        results = {p.name: validate(p.endpoint, script, rollback_script, True, p.name, large_table_rows) for p in phases}
        report["validation"] = {name: r.to_contract() for name, r in results.items()}
        risk = max_risk(*(r.risk_level for r in results.values()))
        report["risk_level"] = risk
        report["estimated_duration"] = sum(r.estimated_duration for r in results.values())
        invalid = {name: r for name, r in results.items() if not r.is_valid}
        if invalid:
            name, r = next(iter(invalid.items()))
            e = r.errors[0]
            where = f" at line {e.line}, column {e.column}" if e.line else ""
            report.update(status="Failed", reason=f"validation failed on {name}: {e.script}{where}: {e.message}")
            _publish(report)
            return Failed(message=report["reason"], data=report)
        progress.step("validated")
        if dry_run:
            report["status"] = "Validated"
            _publish(report)
            return Completed(name="Validated", message="dry run: valid, nothing applied", data=report)
        needs = approval_required(risk, environment) if require_approval is None else require_approval
        if needs:
            progress.step("waiting for approval", advance=False)
            answer = _await_approval(author, approval_timeout_seconds, risk, environment)
            report["approval"] = {"reviewer": answer.reviewer, "approved": answer.approved, "notes": answer.notes,
                                  "reviewed_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            if not answer.approved:
                report.update(status="Rejected", reason=f"rejected by {answer.reviewer}: {answer.notes}".rstrip(": "))
                _publish(report)
                return Cancelled(name="Rejected", message=report["reason"], data=report)
            log.info("Approved by %s", answer.reviewer)
        progress.step("approved" if needs else "no approval needed")
        report["reason"] = _run_phases(report, phases, migration_name, script, execution_id, author, force, safety,
                                       limits, probe_iterations, progress)
        if report["reason"] is None:
            report["status"] = "Completed"
            _publish(report)
            return report
        applied = [p for p in report["phases"] if p["status"] in ("applied", "partially applied")]
        report["status"] = _roll_back(report, phases, applied, migration_name, script, rollback_script,
                                      execution_id, author, report["reason"], safety, progress)
        _publish(report)
        return Failed(name=report["status"], message=report["reason"], data=report)
    finally:
        close_all()


def _run_phases(report, phases, migration_name, script, execution_id, author, force, safety, limits, iterations,
                progress) -> str | None:
    """Apply phase by phase; returns why it stopped, or None when every phase passed."""
    tables = []
    for step in report["validation"].values():
        tables += [o.split()[0] for o in step["dependencyCheck"]["affectedObjects"] if o.endswith(" table")]
    for phase in phases:
        entry = {"name": phase.name, "endpoint": phase.endpoint, "status": "measuring", "breaches": []}
        report["phases"].append(entry)
        progress.step(f"{phase.name}: baseline")
        entry["baseline_raw"] = measure(phase.endpoint, phase.name, "before", tables, phase.probes, iterations)
        entry["baseline"] = _metrics(entry["baseline_raw"])
        progress.step(f"{phase.name}: applying")
        try:
            entry["apply"] = apply_phase(phase.endpoint, migration_name, script, phase.name, execution_id, author,
                                         force, safety)
        except AlreadyApplied as exc:
            entry["status"] = "refused"
            return f"phase {phase.name}: {exc}"
        except ApplyFailed as exc:
            entry["status"] = "partially applied" if exc.committed else "failed"
            entry["error"] = asdict(exc.error)
            return f"phase {phase.name} failed at {exc.error.script} line {exc.error.line}: {exc.error.message}"
        entry["status"] = "applied"
        progress.step(f"{phase.name}: measuring")
        entry["after_raw"] = measure(phase.endpoint, phase.name, "after", tables, phase.probes, iterations)
        entry["after"] = _metrics(entry["after_raw"])
        entry["breaches"] = breaches(Measurement(**entry["baseline_raw"]), Measurement(**entry["after_raw"]), limits)
        if entry["breaches"]:
            return f"phase {phase.name}: performance degradation detected: " + "; ".join(entry["breaches"])
    return None


def _roll_back(report, phases, applied, migration_name, script, rollback_script, execution_id, by, reason, safety,
               progress) -> str:
    """Roll back `applied` phases in reverse order; returns the final status."""
    log = get_run_logger()
    endpoints = {p.name: p.endpoint for p in phases}
    status = "RolledBack"
    for entry in reversed(applied):
        progress.step(f"{entry['name']}: rolling back", advance=False)
        try:
            entry["rollback"] = rollback_phase(endpoints[entry["name"]], migration_name, script, rollback_script,
                                               entry["name"], execution_id, by, reason, safety)
            entry["status"] = "rolled back"
        except MigrationError as exc:
            log.error("Rollback of phase %s failed: %s", entry["name"], exc)
            entry["status"], entry["rollback_error"], status = "rollback failed", str(exc), "Failed"
    log.warning("Migration %s stopped: %s; status %s", migration_name, reason, status)
    return status


@flow(name="schema-rollback", persist_result=True)
def schema_rollback(execution_id: str, reason: str = "rollback requested", requested_by: str = "") -> dict:
    """Undo a finished schema-migration execution on every phase its run applied, in reverse order.
    Returns {"executionId", "status": "RolledBack", "rollbackCompletedAt", "rollbackDuration", "phases"}."""
    from prefect import get_client
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(execution_id))
    params = run.parameters
    phases = [Phase(**p) if isinstance(p, dict) else p for p in params["phases"]]
    safety = Safety(params.get("lock_timeout_seconds", 5.0), params.get("statement_timeout_seconds", 900.0),
                    params.get("lock_retries", 3))
    done = []
    try:
        for phase in reversed(phases):
            if applied_phases(phase.endpoint, params["migration_name"], execution_id):
                rollback_phase(phase.endpoint, params["migration_name"], params["script"], params["rollback_script"],
                               phase.name, execution_id, requested_by or params["author"], reason, safety)
                done.append(phase.name)
    finally:
        close_all()
    if not done:
        raise MigrationError(f"execution {execution_id}: nothing of it is applied any more (rolled back already?)")
    return {"executionId": execution_id, "status": "RolledBack", "phases": done,
            "rollbackCompletedAt": dt.datetime.now(dt.timezone.utc).isoformat(),
            "rollbackDuration": round(time.monotonic() - started, 3)}


def submit_decision(execution_id: str, reviewer: str, approved: bool, notes: str = "") -> None:
    """Answer a waiting approval: resume the run with `Approval` input. Raises ApprovalExpired when
    its time has passed, MigrationError when the run does not wait or the server refuses."""
    from prefect import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import resume_flow_run
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(execution_id))
    if run.state is None or not run.state.is_paused():
        state = run.state.name if run.state else "unknown"
        if run.state and run.state.is_failed() and "paused and never resumed" in (run.state.message or ""):
            raise ApprovalExpired(f"execution {execution_id}: the approval expired")
        raise MigrationError(f"execution {execution_id} is not waiting for approval (state {state})")
    expires = run.state.state_details.pause_timeout
    if expires is not None and expires < dt.datetime.now(dt.timezone.utc):
        raise ApprovalExpired(f"execution {execution_id}: the approval expired at {expires.isoformat()}")
    try:
        resume_flow_run(UUID(execution_id), run_input={"approved": approved, "reviewer": reviewer, "notes": notes})
    except FlowPauseTimeout:
        raise ApprovalExpired(f"execution {execution_id}: the approval expired") from None
    except RuntimeError as exc:  # the server validates the input against Approval's schema
        raise MigrationError(f"execution {execution_id}: resume refused: {exc}") from None
