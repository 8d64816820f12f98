"""A Migration Assistant session IS a flow run of `migrate-tables/on-demand`.

Creating a session stores the caller's credentials as tenant-owned blocks and creates a held flow run tagged
`ma-session`, `tenant:<id>`, `owner:<user>`, `source:<type>`, `destination:<type>`; starting it releases the
run. Status comes from the run's state, its task runs (the steps) and its artifacts (progress, and the
`migration-report` table at the end). A rollback is a run of `rollback-migration/on-demand`; the session run
is tagged `rollback:<that run's id>` so that the session's status follows it.

Status reads are cached per run and refreshed in the background about once a second: many clients polling one running session cost Prefect a
few calls a second, fetched concurrently.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun

from api_shim.auth import Principal
from api_shim.credentials import store_endpoint
from api_shim.errors import ApiError, conflict, not_found
from api_shim.ma_config import MigrationConfig, flow_parameters, unsupported_systems
from api_shim.prefect_runs import (OFF_LOOP, add_tags, cancel_run, create_run, find_runs, read_run, release_run,
                                   run_artifacts, run_tasks, status_of, tag_value, tenant_tags)
from api_shim.session_models import CurrentOperation, PerformanceMetrics, SessionStatus, SessionSummary, Step

log = logging.getLogger("api_shim.sessions")

SESSION_TAG = "ma-session"
MIGRATE_DEPLOYMENT = "migrate-tables/on-demand"
ROLLBACK_DEPLOYMENT = "rollback-migration/on-demand"
FINAL = {"completed", "failed", "cancelled"}
CACHE_SECONDS = 1.0
# the flow's phases, in order: (task function, task name, what the step does)
PHASES = [("connect_test", "connect-test", "Testing connections"), ("plan_table", "plan", "Planning tables and types"),
          ("create_staging", "create-staging", "Creating staging tables"),
          ("copy_chunk", "extract-load", "Copying data"), ("index_staging", "index-staging", "Indexing staging tables"),
          ("verify_chunk", "verify", "Verifying data"), ("find_deleted", "find-deleted", "Finding deleted rows"),
          ("publish", "publish", "Publishing tables")]
_STEP_NAMES = {fn: name for fn, name, _ in PHASES}
_ROLLBACK_STATUS = {"completed": "rolled_back", "failed": "rollback_failed", "cancelled": "rollback_failed"}
_TASK_STATUS = {StateType.COMPLETED: "completed", StateType.FAILED: "failed", StateType.CRASHED: "failed"}


def session_not_found(session_id: Any) -> ApiError:
    return not_found("migration session", "session_id", str(session_id), "MIGRATION_NOT_FOUND")


def invalid_configuration(errors: list[dict[str, str]]) -> ApiError:
    return ApiError(400, "INVALID_CONFIGURATION", "Invalid migration configuration", {"validation_errors": errors})


# ---- creating sessions ------------------------------------------------------------------------------------

async def create_session(client: PrefectClient, config: MigrationConfig, who: Principal, tenant: str | None,
                         extra_tags: list[str] | None = None) -> FlowRun:
    """Validate `config`, keep its credentials in blocks owned by `tenant`, and create the held flow run."""
    errors = unsupported_systems(config)
    if errors:
        raise invalid_configuration(errors)
    source = await store_endpoint(config.source.endpoint("source"), tenant, "source")
    destination = await store_endpoint(config.destination.endpoint("destination"), tenant, "destination")
    tags = [SESSION_TAG, *tenant_tags(tenant, who.username), f"source:{config.source.type}",
            f"destination:{config.destination.type}", *(extra_tags or [])]
    return await create_run(client, MIGRATE_DEPLOYMENT, flow_parameters(config, source, destination), tags,
                            name=config.name, hold=True)


# ---- who sees what ----------------------------------------------------------------------------------------

def scope_tags(who: Principal, scope: str | None) -> list[str]:
    """Tags every session visible to `who` in `scope` (tenant_filter's answer) carries."""
    if who.is_admin and scope is None:
        return [SESSION_TAG]
    return [SESSION_TAG, tenant_tags(scope, who.username)[0]]


def visible(run: FlowRun | None, who: Principal, scope: str | None) -> bool:
    return run is not None and set(scope_tags(who, scope)) <= set(run.tags or [])


async def session_run(client: PrefectClient, session_id: str, who: Principal, scope: str | None) -> FlowRun:
    """The session's flow run, read now (for changes); another tenant's session is not found."""
    run = await read_run(client, session_id)
    if not visible(run, who, scope):
        raise session_not_found(session_id)
    return run


# ---- what a session looks like now ------------------------------------------------------------------------

@dataclass
class SessionView:
    run: FlowRun
    artifacts: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskRun] = field(default_factory=list)
    rollback: FlowRun | None = None
    built: SessionStatus | None = None  # status_model's answer, made once per view

    @property
    def status(self) -> str:
        if self.rollback is not None:
            return _ROLLBACK_STATUS.get(status_of(self.rollback), "rolling_back")
        return status_of(self.run)

    @property
    def report(self) -> list[dict]:
        data = self.artifacts.get("migration-report")
        rows = json.loads(data) if isinstance(data, str) else data
        return rows if isinstance(rows, list) else []

    @property
    def progress(self) -> float:
        if status_of(self.run) == "completed":
            return 100.0
        value = self.artifacts.get("progress")
        return float(value) if isinstance(value, (int, float)) else 0.0

    @property
    def duration(self) -> float | None:
        start = self.run.start_time
        if start is None:
            return None
        return round(((self.run.end_time or dt.datetime.now(dt.timezone.utc)) - start).total_seconds(), 3)

    def tasks_of(self, phase: str) -> list[TaskRun]:
        return [t for t in self.tasks if task_function(t) == phase]


def task_function(task: TaskRun) -> str:
    """The flow's task function a task run ran (its key is `<qualname>-<hash>`)."""
    return (task.task_key or "").rsplit("-", 1)[0]


@dataclass
class _Entry:
    view: "SessionView | None" = None
    loaded: bool = False
    fetched: float = 0.0
    refresh: asyncio.Future | None = None


class _Cache:
    """Per-run views. A view older than CACHE_SECONDS is refreshed in the background while readers keep getting
    the previous one, so pollers never wait on Prefect, except for the first read of a run (or the first after
    `forget`, which actions call so that their effect shows at once)."""

    def __init__(self):
        self.entries: dict[str, _Entry] = {}

    async def get(self, client: PrefectClient, run_id: str) -> SessionView | None:
        entry = self.entries.get(run_id)
        if entry is None:
            self._evict()
            entry = self.entries[run_id] = _Entry()
        if entry.refresh is None and (not entry.loaded or time.monotonic() - entry.fetched > CACHE_SECONDS):
            entry.refresh = asyncio.ensure_future(OFF_LOOP.run(lambda reader: _load_view(reader, run_id)))
            entry.refresh.add_done_callback(lambda done, e=entry: self._landed(e, done))
        if entry.loaded:
            return entry.view
        return await asyncio.shield(entry.refresh)

    @staticmethod
    def _landed(entry: _Entry, done: asyncio.Future) -> None:
        entry.refresh = None
        if done.cancelled() or done.exception() is not None:
            log.warning("could not refresh a session's status: %s", "cancelled" if done.cancelled() else done.exception())
            return
        entry.view, entry.loaded, entry.fetched = done.result(), True, time.monotonic()

    def _evict(self) -> None:
        if len(self.entries) > 10_000:
            cutoff = time.monotonic() - 60
            self.entries = {k: e for k, e in self.entries.items() if e.refresh is not None or e.fetched > cutoff}

    def forget(self, run_id: Any) -> None:
        self.entries.pop(str(run_id), None)


CACHE = _Cache()


async def _load_view(client: PrefectClient, run_id: str) -> SessionView | None:
    run = await read_run(client, run_id)
    if run is None or SESSION_TAG not in (run.tags or []):
        return None
    rollback_id = tag_value(run, "rollback")
    artifacts, tasks, rollback = await asyncio.gather(
        run_artifacts(client, run.id), run_tasks(client, run.id),
        read_run(client, rollback_id) if rollback_id else asyncio.sleep(0, None))
    return SessionView(run, artifacts, tasks, rollback)


async def session_view(client: PrefectClient, session_id: str, who: Principal, scope: str | None) -> SessionView:
    """The session as last seen (at most about a second ago); another tenant's session is not found."""
    view = await CACHE.get(client, str(session_id))
    if view is None or not visible(view.run, who, scope):
        raise session_not_found(session_id)
    return view


def steps(view: SessionView) -> list[Step]:
    """One step per phase of the flow; a phase the run skips (verify off, no deletes asked) is left out."""
    params = view.run.parameters or {}
    done = status_of(view.run) == "completed"
    found = []
    for phase, name, description in PHASES:
        tasks = view.tasks_of(phase)
        if phase == "verify_chunk" and params.get("verify") is False:
            continue
        if phase == "find_deleted" and not (tasks or params.get("detect_deletes")):
            continue
        found.append(Step(name=name, description=description, status=_step_status(tasks, done), task_runs=len(tasks)))
    # task runs are read newest first (at most 200): phases before the oldest one seen are over
    started = [i for i, s in enumerate(found) if s.task_runs]
    for step in found[:started[-1] if started else 0]:
        if step.status == "pending":
            step.status = "completed"
    return found


def _step_status(tasks: list[TaskRun], run_done: bool) -> str:
    if run_done:
        return "completed"
    if not tasks:
        return "pending"
    states = {_TASK_STATUS.get(t.state_type, "running") for t in tasks}
    return "failed" if "failed" in states else "running" if "running" in states else "completed"


def _current_operation(view: SessionView) -> CurrentOperation | None:
    running = [t for t in view.tasks if t.state_type == StateType.RUNNING]
    if not running:
        return None
    task = running[0]
    return CurrentOperation(type=_STEP_NAMES.get(task_function(task), task_function(task)), task=task.name,
                            progress=view.progress)


def human_bytes(n: float | None) -> str | None:
    if n is None:
        return None
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return None


def performance(view: SessionView) -> PerformanceMetrics:
    report, tables = view.report, (view.run.parameters or {}).get("tables")
    copied = [t for t in view.tasks_of("copy_chunk") if t.state_type == StateType.COMPLETED]
    verified = [t for t in view.tasks_of("verify_chunk") if t.state_type == StateType.COMPLETED]
    metrics = PerformanceMetrics(chunks_copied=len(copied), chunks_verified=len(verified),
                                 tables_completed=len(report), tables_total=len(tables) if tables else None)
    if report:
        rows, size = sum(r.get("rows", 0) for r in report), sum(r.get("bytes", 0) for r in report)
        seconds = sum(r.get("seconds", 0.0) for r in report)
        metrics.rows_transferred, metrics.bytes_transferred = rows, size
        metrics.data_transferred = human_bytes(size)
        metrics.rows_per_second = round(rows / seconds, 1) if seconds else None
        metrics.transfer_rate_average = f"{human_bytes(size / seconds)}/s" if seconds else None
        metrics.tables_total = metrics.tables_total or len(report)
    return metrics


def status_model(view: SessionView) -> SessionStatus:
    """The session's status as /status shows it (built once per cached view)."""
    if view.built is None:
        view.built = _build_status(view)
    return view.built


def _build_status(view: SessionView) -> SessionStatus:
    found, status = steps(view), view.status
    state = view.run.state
    running = [s for s in found if s.status in ("running", "failed")]
    current = ("Completed" if status_of(view.run) == "completed" else running[-1].description if running
               else None)
    if view.rollback is not None:
        current = "Rolling back" if status == "rolling_back" else "Rolled back" if status == "rolled_back" \
            else "Rollback failed"
    scheduled = state.state_details.scheduled_time if state and status == "scheduled" else None
    return SessionStatus(
        session_id=str(view.run.id), name=view.run.name, status=status, progress=view.progress,
        current_step=current, start_time=view.run.start_time, end_time=view.run.end_time,
        duration=view.duration, error=_error_of(view), steps=found, steps_total=len(found),
        steps_completed=sum(s.status == "completed" for s in found), performance_metrics=performance(view),
        current_operation=_current_operation(view), scheduled_time=scheduled,
        rollback_run_id=str(view.rollback.id) if view.rollback else None)


def _error_of(view: SessionView) -> str | None:
    for run in (view.rollback, view.run):
        if run is not None and status_of(run) == "failed":
            return (run.state.message if run.state else None) or "failed"
    return None


def summary(run: FlowRun, progress: float | None) -> SessionSummary:
    status = status_of(run)
    return SessionSummary(
        session_id=str(run.id), name=run.name, status=status, created_at=run.created, start_time=run.start_time,
        end_time=run.end_time, source_type=tag_value(run, "source"), destination_type=tag_value(run, "destination"),
        progress=100.0 if status == "completed" else float(progress or 0.0))


# ---- changing sessions ------------------------------------------------------------------------------------

def _started_at(run: FlowRun) -> str | None:
    when = run.start_time or run.expected_start_time
    return when.isoformat() if when else None


def refuse_unless_waiting(run: FlowRun, action: str) -> None:
    """409 unless the run has not started: running (MIGRATION_ALREADY_RUNNING) or finished."""
    status = status_of(run)
    if status in FINAL:
        raise conflict("MIGRATION_ALREADY_FINISHED", f"Migration session has already finished; cannot {action}",
                       session_id=str(run.id), current_status=status)
    if status not in ("pending",) and not _scheduled_later(run):
        raise conflict("MIGRATION_ALREADY_RUNNING", "Migration session is already running",
                       session_id=str(run.id), current_status=status, started_at=_started_at(run))


def _scheduled_later(run: FlowRun) -> bool:
    """Scheduled (by /schedule) for a time still ahead, so that it may be started now or rescheduled."""
    state = run.state
    when = state.state_details.scheduled_time if state and state.type == StateType.SCHEDULED else None
    return when is not None and when > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


async def start(client: PrefectClient, run: FlowRun, when: dt.datetime | None = None) -> None:
    refuse_unless_waiting(run, "start it")
    await release_run(client, run.id, when)
    CACHE.forget(run.id)


async def cancel(client: PrefectClient, run: FlowRun) -> None:
    status = status_of(run)
    if status in FINAL or status == "cancelling":
        raise conflict("MIGRATION_NOT_CANCELLABLE", f"Migration session is {status}; nothing to cancel",
                       session_id=str(run.id), current_status=status)
    await cancel_run(client, run)
    CACHE.forget(run.id)


async def rollback(client: PrefectClient, run: FlowRun, who: Principal) -> FlowRun:
    """A run of rollback-migration for the session's destination and run id (completed sessions only)."""
    status = status_of(run)
    if status != "completed":
        raise conflict("MIGRATION_NOT_COMPLETED", "Only a completed migration can be rolled back",
                       session_id=str(run.id), current_status=status)
    if tag_value(run, "rollback"):
        raise conflict("ROLLBACK_ALREADY_STARTED", "This migration has already been rolled back",
                       session_id=str(run.id), rollback_run_id=tag_value(run, "rollback"))
    params = {"destination": run.parameters["destination"], "run_id": str(run.id)}
    tags = ["ma-rollback", f"rollback-of:{run.id}", *tenant_tags(tag_value(run, "tenant"), who.username)]
    undo = await create_run(client, ROLLBACK_DEPLOYMENT, params, tags, name=f"rollback {run.name}")
    await add_tags(client, run, [f"rollback:{undo.id}"])
    CACHE.forget(run.id)
    return undo


# ---- batches ----------------------------------------------------------------------------------------------

async def run_batch(client: PrefectClient, run_ids: list[UUID], parallel_limit: int, stop_on_failure: bool,
                    poll_seconds: float = 1.0) -> None:
    """Release held sessions at most `parallel_limit` at a time; on a failure with stop_on_failure, cancel the
    rest (those waiting and those running). A session started, cancelled or scheduled by hand is left alone."""
    waiting, active = list(run_ids), set()
    while waiting or active:
        while waiting and len(active) < parallel_limit:
            run = await read_run(client, str(waiting.pop(0)))
            if run is not None and status_of(run) == "pending":
                await release_run(client, run.id)
                active.add(run.id)
        await asyncio.sleep(poll_seconds)
        for run in await find_runs(client, [SESSION_TAG], ids=list(active)) if active else []:
            status = status_of(run)
            if status in FINAL:
                active.discard(run.id)
                if status != "completed" and stop_on_failure:
                    log.info("batch: session %s %s; stopping the rest", run.id, status)
                    await _stop(client, waiting + list(active))
                    return


async def _stop(client: PrefectClient, run_ids: list[UUID]) -> None:
    for run_id in run_ids:
        run = await read_run(client, str(run_id))
        if run is not None and status_of(run) not in FINAL:
            await cancel_run(client, run)
            CACHE.forget(run_id)
