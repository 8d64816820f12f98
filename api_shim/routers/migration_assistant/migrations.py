"""/migrations and /ws/migrations: migration sessions, each a flow run of migrate-tables (see api_shim.sessions)."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Body, Depends, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

from api_shim import sessions
from api_shim.auth import Principal, principal_from_credentials, require_scopes, tenant_filter, owning_tenant
from api_shim.errors import ApiError
from api_shim.ma_config import MigrationConfig, unsupported_systems
from api_shim.prefect_runs import (LOG_LEVELS, STATUS_STATES, find_runs, find_runs_with_status, log, prefect_client,
                                   run_logs)
from api_shim.session_models import (BatchCreated, BatchRequest, DatabaseMetrics, ErrorMetrics, LogEntry,
                                     MetricsBody, OverallMetrics, RollbackRequest, RollbackStarted, ScheduleRequest,
                                     SessionAction, SessionCreated, SessionLogs, SessionMetrics, SessionScheduled,
                                     SessionStatus, SessionSummary, StartRequest, SystemMetrics, TransferMetrics)
from api_shim.settings import get_settings

router = APIRouter(tags=["migrations"])
reader = require_scopes("migrations:read")
writer = require_scopes("migrations:write")
_batches: set[asyncio.Task] = set()  # running batch releasers (kept referenced until they end)
ENDED = sessions.FINAL | {"rolled_back", "rollback_failed"}


def _created(run) -> SessionCreated:
    return SessionCreated(session_id=str(run.id), message="Migration session created successfully",
                          created_at=run.created or dt.datetime.now(dt.timezone.utc))


@router.post("/migrations/", response_model=SessionCreated, status_code=201)
async def create_migration(config: MigrationConfig, who: Principal = Depends(writer),
                           scope: str | None = Depends(tenant_filter),
                           client: PrefectClient = Depends(prefect_client)) -> SessionCreated:
    """Create a session: a held run of migrate-tables whose credentials are kept in the tenant's blocks."""
    run = await sessions.create_session(client, config, who, owning_tenant(who, scope))
    return _created(run)


@router.get("/migrations/", response_model=list[SessionSummary])
async def list_migrations(status_filter: Literal[tuple(STATUS_STATES)] | None = None,  # type: ignore[valid-type]
                          limit: int = Query(100, ge=1, le=200), offset: int = Query(0, ge=0, le=1_000_000),
                          who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                          client: PrefectClient = Depends(prefect_client)) -> list[SessionSummary]:
    tags = sessions.scope_tags(who, scope)
    if status_filter:
        runs = await find_runs_with_status(client, tags, status_filter, limit=limit, offset=offset)
    else:
        runs = await find_runs(client, tags, limit=limit, offset=offset)
    progress = await _progress_of(client, [r.id for r in runs])
    return [sessions.summary(r, progress.get(r.id)) for r in runs]


async def _progress_of(client: PrefectClient, run_ids: list) -> dict:
    if not run_ids:
        return {}
    found = await client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=run_ids), type=ArtifactFilterType(any_=["progress"])))
    return {a.flow_run_id: a.data for a in found if isinstance(a.data, (int, float))}


@router.post("/migrations/batch", response_model=BatchCreated, status_code=201)
async def create_batch(batch: BatchRequest, who: Principal = Depends(writer),
                       scope: str | None = Depends(tenant_filter),
                       client: PrefectClient = Depends(prefect_client)) -> BatchCreated:
    """Create every session, then release them at most parallel_limit at a time (a task in this server)."""
    errors = [{**e, "field": f"migrations.{i}.{e['field']}"}
              for i, config in enumerate(batch.migrations) for e in unsupported_systems(config)]
    if errors:
        raise sessions.invalid_configuration(errors)
    batch_id = f"batch-{uuid.uuid4().hex[:12]}"
    runs = [await sessions.create_session(client, config, who, owning_tenant(who, scope), [f"batch:{batch_id}"])
            for config in batch.migrations]
    options = batch.batch_options
    task = asyncio.create_task(_run_batch(client, [r.id for r in runs], options.parallel_limit,
                                          options.stop_on_failure))
    _batches.add(task)
    task.add_done_callback(_batches.discard)
    return BatchCreated(batch_id=batch_id, sessions=[_created(r) for r in runs], parallel_limit=options.parallel_limit,
                        stop_on_failure=options.stop_on_failure,
                        message=f"{len(runs)} sessions created; at most {options.parallel_limit} run at once")


async def _run_batch(client: PrefectClient, run_ids: list, parallel_limit: int, stop_on_failure: bool) -> None:
    try:
        await sessions.run_batch(client, run_ids, parallel_limit, stop_on_failure)
    except Exception:
        log.exception("batch of %d sessions stopped by an error; sessions not yet released stay pending", len(run_ids))


@router.get("/migrations/{session_id}/status", response_model=SessionStatus)
async def migration_status(session_id: str, who: Principal = Depends(reader),
                           scope: str | None = Depends(tenant_filter),
                           client: PrefectClient = Depends(prefect_client)) -> SessionStatus:
    return sessions.status_model(await sessions.session_view(client, session_id, who, scope))


@router.post("/migrations/{session_id}/start", response_model=SessionAction)
async def start_migration(session_id: str, options: StartRequest | None = Body(None),
                          who: Principal = Depends(writer), scope: str | None = Depends(tenant_filter),
                          client: PrefectClient = Depends(prefect_client)) -> SessionAction:
    """Release the session's run; the worker starts it within seconds."""
    await sessions.start(client, await sessions.session_run(client, session_id, who, scope))
    return SessionAction(session_id=session_id, status="started",
                         message="Migration execution started in background")


@router.post("/migrations/{session_id}/cancel", response_model=SessionAction)
async def cancel_migration(session_id: str, who: Principal = Depends(writer),
                           scope: str | None = Depends(tenant_filter),
                           client: PrefectClient = Depends(prefect_client)) -> SessionAction:
    await sessions.cancel(client, await sessions.session_run(client, session_id, who, scope))
    return SessionAction(session_id=session_id, status="cancelled", message="Migration cancellation initiated")


@router.post("/migrations/{session_id}/rollback", response_model=RollbackStarted)
async def rollback_migration(session_id: str, options: RollbackRequest | None = Body(None),
                             who: Principal = Depends(writer), scope: str | None = Depends(tenant_filter),
                             client: PrefectClient = Depends(prefect_client)) -> RollbackStarted:
    """Restore the destination to its state before the session's run (a run of rollback-migration)."""
    undo = await sessions.rollback(client, await sessions.session_run(client, session_id, who, scope), who)
    return RollbackStarted(session_id=session_id, status="rollback_started", rollback_run_id=str(undo.id),
                           message="Migration rollback started in background")


@router.post("/migrations/{session_id}/schedule", response_model=SessionScheduled)
async def schedule_migration(session_id: str, schedule: ScheduleRequest, who: Principal = Depends(writer),
                             scope: str | None = Depends(tenant_filter),
                             client: PrefectClient = Depends(prefect_client)) -> SessionScheduled:
    """Run the session at a given time: its flow run becomes a Prefect scheduled run for that time."""
    when = _schedule_time(schedule)
    await sessions.start(client, await sessions.session_run(client, session_id, who, scope), when)
    return SessionScheduled(session_id=session_id, scheduled_time=when,
                            message=f"Migration scheduled for {when.isoformat()}")


def _schedule_time(schedule: ScheduleRequest) -> dt.datetime:
    when = schedule.scheduled_time
    if when.tzinfo is None:
        try:
            when = when.replace(tzinfo=ZoneInfo(schedule.timezone))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise _bad_field("timezone", f"unknown time zone {schedule.timezone!r}") from None
    try:
        when = when.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        raise _bad_field("scheduled_time", "out of range") from None
    if when <= dt.datetime.now(dt.timezone.utc):
        raise _bad_field("scheduled_time", "must be in the future")
    return when


def _bad_field(name: str, message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                    {"validation_errors": [{"field": name, "message": message}]})


@router.get("/migrations/{session_id}/logs", response_model=SessionLogs)
async def migration_logs(session_id: str, level: Literal[tuple(LOG_LEVELS)] | None = None,  # type: ignore[valid-type]
                         limit: int = Query(100, ge=1, le=200, description="at most 200 per call; page with since"),
                         since: dt.datetime | None = None, who: Principal = Depends(reader),
                         scope: str | None = Depends(tenant_filter),
                         client: PrefectClient = Depends(prefect_client)) -> SessionLogs:
    """The run's log lines, oldest first, at `level` or above."""
    run = await sessions.session_run(client, session_id, who, scope)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    found = await run_logs(client, run.id, level=level, limit=min(limit + 1, 200), since=since)
    entries = [LogEntry(timestamp=e["timestamp"], level=e["level"], message=e["message"],
                        component=_component(e["logger"]), details={"logger": e["logger"]}) for e in found[:limit]]
    return SessionLogs(session_id=session_id, logs=entries, total_logs=len(entries), has_more=len(found) >= limit + 1
                       or len(found) == 200)


def _component(logger: str | None) -> str:
    return {"prefect.flow_runs": "flow", "prefect.task_runs": "task"}.get(logger or "", logger or "flow")


@router.get("/migrations/{session_id}/metrics", response_model=SessionMetrics)
async def migration_metrics(session_id: str, who: Principal = Depends(reader),
                            scope: str | None = Depends(tenant_filter),
                            client: PrefectClient = Depends(prefect_client)) -> SessionMetrics:
    """Figures from the run's report, its task runs and its logs."""
    view = await sessions.session_view(client, session_id, who, scope)
    noisy = await run_logs(client, view.run.id, level="WARNING", limit=200)
    return SessionMetrics(session_id=session_id, metrics=_metrics(view, noisy))


def _metrics(view: sessions.SessionView, noisy: list[dict]) -> MetricsBody:
    perf, report, done = sessions.performance(view), view.report, view.status != "running"
    progress, duration = view.progress, view.duration
    remaining = round(duration * (100 - progress) / progress, 1) if duration and 0 < progress < 100 else None
    peak = max((r["bytes"] / r["seconds"] for r in report if r.get("seconds")), default=None)
    return MetricsBody(
        overall=OverallMetrics(duration=duration, progress=progress,
                               estimated_remaining=0.0 if view.status == "completed" else remaining),
        transfer=TransferMetrics(rate_current=None, rate_average=perf.transfer_rate_average,
                                 rate_peak=f"{sessions.human_bytes(peak)}/s" if peak else None,
                                 bytes_transferred=perf.bytes_transferred,
                                 bytes_total=perf.bytes_transferred if done else None),
        database=DatabaseMetrics(tables_migrated=len(report), tables_total=perf.tables_total,
                                 rows_migrated=perf.rows_transferred,
                                 rows_total=perf.rows_transferred if done else None,
                                 data_size=perf.data_transferred, tables=report),
        system=SystemMetrics(),
        errors=ErrorMetrics(total_errors=sum(e["level"] in ("ERROR", "CRITICAL") for e in noisy),
                            total_warnings=sum(e["level"] == "WARNING" for e in noisy),
                            retry_count=sum(max(0, (t.run_count or 1) - 1) for t in view.tasks)))


# ---- WebSocket ---------------------------------------------------------------------------------------------

@router.websocket("/ws/migrations/{session_id}")
async def follow_migration(websocket: WebSocket, session_id: str, token: str | None = None):
    """Push the session's status (same fields as /status, plus `type`) whenever it changes, until it ends.
    Authenticate with ?token=<jwt>, an Authorization: Bearer header or X-API-Key."""
    client: PrefectClient = websocket.app.state.prefect
    try:
        who = await _socket_caller(websocket, token)
        if "migrations:read" not in who.scopes and "admin" not in who.scopes:
            raise ApiError(403, "INSUFFICIENT_PERMISSIONS", "Insufficient permissions for this operation",
                           {"required_scope": "migrations:read"})
        scope = None if who.is_admin else who.tenant_id
        view = await sessions.session_view(client, session_id, who, scope)
    except ApiError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    try:
        await _push_until_ended(websocket, client, view, who, scope)
    except WebSocketDisconnect:
        return


async def _push_until_ended(websocket: WebSocket, client: PrefectClient, view, who, scope) -> None:
    last = None
    while True:
        status = sessions.status_model(view).model_dump(mode="json")
        ended = status["status"] in ENDED
        if status != last:
            await websocket.send_json({"type": "final" if ended else "progress", **status})
            last = status
        if ended:
            await websocket.close(code=1000)
            return
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=1.0)
            if message.get("type") == "websocket.disconnect":
                return
        except asyncio.TimeoutError:
            pass
        view = await sessions.session_view(client, str(view.run.id), who, scope)


async def _socket_caller(websocket: WebSocket, token: str | None) -> Principal:
    header = websocket.headers.get("authorization", "")
    bearer = token or (header[7:].strip() if header.lower().startswith("bearer ") else None)
    async with websocket.app.state.sessions() as db:
        return await principal_from_credentials(db, bearer, websocket.headers.get(get_settings().api_key_header))


async def _deny(websocket: WebSocket, exc: ApiError) -> None:
    """Refuse the handshake with the error's HTTP status and envelope, or close with 1008 (policy violation)."""
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details,
                      "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "request_id": None}}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=exc.status))
    except RuntimeError:
        await websocket.close(code=1008, reason=exc.code)
