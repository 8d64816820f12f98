"""Executions: POST /migrations/{id}/execute starts a run of `schema-migration/on-demand` (its id IS the
execution id), GET .../executions/{executionId} reads status, phase, progress and metrics from the run and
its artifacts, POST .../rollback runs `schema-rollback/on-demand`.

Rollback answers 200 with the rollback's completion time and duration when the rollback run ends within
ROLLBACK_WAIT_SECONDS; otherwise 202 with status RollingBack (the execution's status shows the outcome).
"""
from __future__ import annotations

import json
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Response
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import UtcDatetime
from api_shim.auth import Principal, tenant_filter
from api_shim.errors import ApiError, conflict, not_found
from api_shim.prefect_runs import (create_run, find_runs, latest_artifact, prefect_client, read_run, run_tasks, tenant_tags,
                                   wait_for_final)
from api_shim.routers.schema_orchestrator.common import (
    CONTRACT_ROLES, DEPLOYMENT, MASTER, NAME_PATTERN, ROLLBACK_DEPLOYMENT, Environment, ResourceId, Strategy,
    acting_as, invalid, load_database, load_migration, may_change, new_approval, off_loop, open_approval,
    phase_targets, reader,
)
from api_shim.store.db import db_session
from api_shim.store.models import as_utc, utcnow
from api_shim.store.schema_models import SchemaDatabase, SchemaExecution, SchemaMigration
from connectors.base import MigrationError
from tasks.probes import Measurement
from tasks.schema_apply import AlreadyApplied, check_history

router = APIRouter(prefix="/api/v1/migrations")
ExecutionState = Literal["Running", "PendingApproval", "Completed", "Failed", "RolledBack", "RollingBack",
                         "Rejected", "Cancelled"]
ACTIVE = ("Running", "PendingApproval", "RollingBack")  # migration statuses that follow a run
ROLLBACK_WAIT_SECONDS = 60
PhaseName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class Thresholds(BaseModel):
    """A phase regresses when average latency grows by more than latencyIncreasePct percent and by more
    than minLatencyIncreaseMs, p99 by more than p99IncreasePct (when given), or lag or probe errors exceed theirs."""
    latencyIncreasePct: float = Field(60.0, gt=0, le=100_000)
    minLatencyIncreaseMs: float = Field(5.0, ge=0, le=3_600_000)
    p99IncreasePct: float | None = Field(None, gt=0, le=100_000)
    maxReplicationLagSeconds: float = Field(60.0, gt=0, le=86_400)
    maxProbeErrors: int = Field(0, ge=0, le=100_000)

    def engine(self) -> dict:
        """As tasks.probes.Thresholds fields."""
        return {"latency_increase_pct": self.latencyIncreasePct, "min_latency_increase_ms": self.minLatencyIncreaseMs,
                "p99_increase_pct": self.p99IncreasePct, "max_replication_lag_seconds": self.maxReplicationLagSeconds,
                "max_probe_errors": self.maxProbeErrors}


class ExecuteIn(BaseModel):
    environment: Environment | None = Field(None, description="must be the target database's, when given")
    strategy: Strategy | None = Field(None, description="default: the migration's")
    dryRun: bool = False
    phases: list[PhaseName] | None = Field(None, min_length=1, max_length=32,
                                     description="replica ids and `master`, in order; default: replicas, then master")
    force: bool = Field(False, description="apply again although the targets' history says it is applied")
    thresholds: Thresholds | None = Field(None, description="when a phase counts as a regression (rolled back)")


class ExecutionStarted(BaseModel):
    executionId: str
    migrationId: str
    status: ExecutionState
    startedAt: UtcDatetime
    estimatedDuration: int = Field(description="seconds")
    dryRun: bool
    phases: list[str]
    approvalId: str | None = None


class PerformanceMetrics(BaseModel):
    avgQueryLatencyMs: float | None = None
    p99QueryLatencyMs: float | None = None
    replicationLagSeconds: float | None = None
    phase: str | None = Field(None, description="the phase these were measured on")


class ExecutionView(BaseModel):
    executionId: str
    migrationId: str
    status: ExecutionState
    dryRun: bool
    startedAt: UtcDatetime
    completedAt: UtcDatetime | None = None
    currentPhase: str | None = None
    progress: float = Field(ge=0, le=100)
    phases: list[str]
    performanceMetrics: PerformanceMetrics | None = None
    message: str | None = Field(None, description="why it stopped, for failed, rolled back or rejected runs")


class RollbackIn(BaseModel):
    reason: str = Field("rollback requested", min_length=1, max_length=2000)


class RollbackDone(BaseModel):
    executionId: str
    status: Literal["RolledBack", "RollingBack"]
    rollbackCompletedAt: UtcDatetime | None = None
    rollbackDuration: float | None = Field(None, description="seconds")
    rollbackRunId: str
    phases: list[str] = Field(default_factory=list, description="phases rolled back, in order")


def run_status(run: FlowRun | None, rollback: FlowRun | None = None) -> str:
    """An execution's status from its flow run (and the run rolling it back, if any)."""
    if rollback is not None and rollback.state is not None:
        if rollback.state.is_completed():
            return "RolledBack"
        if not rollback.state.is_final():
            return "RollingBack"
    state = run.state if run else None
    if state is None or not state.is_final():
        return "PendingApproval" if state is not None and state.is_paused() else "Running"
    if state.is_completed():
        return "Completed"
    if state.is_cancelled():
        return "Rejected" if state.name == "Rejected" else "Cancelled"
    return "RolledBack" if state.name == "RolledBack" else "Failed"


async def runs_by_id(client: PrefectClient, ids: list[str | None]) -> dict[str, FlowRun]:
    wanted = [i for i in ids if i]
    if not wanted:
        return {}
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in wanted]))
    return {str(r.id): r for r in await client.read_flow_runs(flow_run_filter=flt)}


async def refresh(session: AsyncSession, client: PrefectClient, migrations: list[SchemaMigration]) -> None:
    """Bring the status of migrations that follow a run up to date with it."""
    following = {m.execution_id: m for m in migrations if m.status in ACTIVE and m.execution_id}
    if not following:
        return
    executions = (await session.execute(select(SchemaExecution).where(SchemaExecution.id.in_(following)))).scalars().all()
    runs = await runs_by_id(client, [i for e in executions for i in (e.id, e.rollback_run_id)])
    for e in executions:
        following[e.id].status = run_status(runs.get(e.id), runs.get(e.rollback_run_id))
    await session.commit()


async def load_execution(session: AsyncSession, migration: SchemaMigration, execution_id: str) -> SchemaExecution:
    found = await session.get(SchemaExecution, execution_id)
    if found is None or found.migration_id != migration.id:
        raise not_found("execution", "executionId", execution_id)
    return found


def planned_phases(db: SchemaDatabase, strategy: str, names: list[str] | None) -> list[dict]:
    if strategy == "Direct":
        if names not in (None, [MASTER]):
            raise invalid("phases", "the Direct strategy applies to the master only")
        names = [MASTER]
    return phase_targets(db, names)


async def refuse_concurrent(client: PrefectClient, migration: SchemaMigration) -> None:
    for run in await find_runs(client, [f"schema-migration:{migration.id}"], limit=20):
        if run.state is None or not run.state.is_final():
            raise conflict("MIGRATION_IN_PROGRESS", "Migration already in progress", executionId=str(run.id),
                           state=run.state.name if run.state else "unknown")


async def refuse_reapply(migration: SchemaMigration, phases: list[dict]) -> None:
    """409 when a target's history says this migration is applied there (or applied with another script).
    Unreachable targets are left to the run, which reports them."""
    for phase in phases:
        try:
            await off_loop(check_history.fn, phase["endpoint"], migration.name, migration.script, phase["name"], False)
        except AlreadyApplied as exc:
            raise conflict("ALREADY_APPLIED", str(exc), phase=phase["name"], force="send force: true to apply again")
        except MigrationError:
            return


@router.post("/{migrationId}/execute", response_model=ExecutionStarted, status_code=202)
async def execute_migration(migrationId: ResourceId, body: ExecuteIn,
                            who: Principal = Depends(acting_as(*CONTRACT_ROLES)),
                            tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                            client: PrefectClient = Depends(prefect_client)) -> ExecutionStarted:
    """Start an execution (or, with dryRun, a validation run). A migration that needs approval waits in
    PendingApproval (its run suspended) until an Admin approves or rejects it, unless approved beforehand."""
    migration = await load_migration(session, migrationId, who, tenant)
    db = await load_database(session, migration.database_id, who, tenant)
    may_change(who, db.environment, "execute a migration")
    if body.environment and body.environment != db.environment:
        raise invalid("environment", f"the target database is a {db.environment} database, not {body.environment}")
    phases = planned_phases(db, body.strategy or migration.strategy, body.phases)
    await refuse_concurrent(client, migration)
    if not body.dryRun and not body.force:
        await refuse_reapply(migration, phases)
    approval = None if body.dryRun else await open_approval(session, migration.id)
    if approval is None and not body.dryRun and migration.requires_approval:
        approval = new_approval(migration, who.username)
        session.add(approval)
    waits = approval is not None and approval.status == "Pending"
    params = {"migration_name": migration.name, "script": migration.script, "rollback_script": migration.rollback_script,
              "phases": phases, "author": migration.author, "environment": db.environment, "dry_run": body.dryRun,
              "force": body.force, "require_approval": waits if approval else None,
              "thresholds": body.thresholds.engine() if body.thresholds else None}
    if waits:
        params["approval_timeout_seconds"] = max(1, int((as_utc(approval.expires_at) - utcnow()).total_seconds()))
    run = await create_run(client, DEPLOYMENT, params,
                           [*tenant_tags(migration.tenant_id, who.username), f"schema-migration:{migration.id}"],
                           name=f"{migration.name}{' (dry run)' if body.dryRun else ''}")
    execution = SchemaExecution(id=str(run.id), migration_id=migration.id, dry_run=body.dryRun,
                                phases=[p["name"] for p in phases], started_by=who.username)
    session.add(execution)
    if approval is not None:
        approval.execution_id = execution.id
    status = "PendingApproval" if waits else "Running"
    if not body.dryRun:
        migration.status, migration.execution_id = status, execution.id
    await session.commit()
    return ExecutionStarted(executionId=execution.id, migrationId=migration.id, status=status,
                            startedAt=execution.started_at, estimatedDuration=migration.estimated_duration,
                            dryRun=body.dryRun, phases=execution.phases, approvalId=approval.id if approval else None)


def _table(data) -> list[dict]:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return data if isinstance(data, list) else []


def metrics_of(report_rows: list[dict]) -> PerformanceMetrics | None:
    """The latest phase measurement in the report: after the change if measured, else the baseline."""
    for when in ("after", "before"):
        for row in reversed(report_rows):
            if row.get(f"{when}_avgQueryLatencyMs") is not None:
                return PerformanceMetrics(phase=row.get("phase"), **{k: row.get(f"{when}_{k}") for k in (
                    "avgQueryLatencyMs", "p99QueryLatencyMs", "replicationLagSeconds")})
    return None


async def latest_measurement(client: PrefectClient, run: FlowRun) -> PerformanceMetrics | None:
    """While a run is going: the newest finished `measure` task's result (None when not readable here)."""
    for task_run in await run_tasks(client, run.id, limit=50):
        if task_run.name.startswith("measure") and task_run.state and task_run.state.is_completed():
            try:
                found = Measurement(**await task_run.state.aresult())
            except Exception:
                return None
            return PerformanceMetrics(phase=task_run.name.rsplit("[", 1)[-1].rstrip("]"), **found.contract())
    return None


async def execution_view(client: PrefectClient, execution: SchemaExecution) -> ExecutionView:
    run = await read_run(client, execution.id)
    rollback = await read_run(client, execution.rollback_run_id) if execution.rollback_run_id else None
    status = run_status(run, rollback)
    progress = await latest_artifact(client, run.id, "schema-migration-progress") if run else None
    report = await latest_artifact(client, run.id, "schema-migration-report") if run else None
    step = (progress.description or "") if progress else ""
    phase = step.split(":", 1)[0] if ":" in step else None
    final = run is not None and run.state is not None and run.state.is_final()
    percent = 100.0 if final and run.state.is_completed() else float(progress.data) if progress else 0.0
    if report:
        metrics = metrics_of(_table(report.data))
    else:
        metrics = await latest_measurement(client, run) if run and not final else None
    return ExecutionView(
        executionId=execution.id, migrationId=execution.migration_id, status=status, dryRun=execution.dry_run,
        startedAt=(run.start_time if run and run.start_time else execution.started_at),
        completedAt=(rollback or run).end_time if final else None,
        currentPhase=phase if phase in execution.phases else None, progress=min(100.0, max(0.0, percent)),
        phases=execution.phases, performanceMetrics=metrics,
        message=run.state.message if final and not run.state.is_completed() else None)


@router.get("/{migrationId}/executions/{executionId}", response_model=ExecutionView)
async def execution_status(migrationId: ResourceId, executionId: ResourceId, who: Principal = Depends(reader),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> ExecutionView:
    migration = await load_migration(session, migrationId, who, tenant)
    execution = await load_execution(session, migration, executionId)
    await refresh(session, client, [migration])
    return await execution_view(client, execution)


async def rollback_outcome(run: FlowRun, execution_id: str) -> RollbackDone:
    """What a finished schema-rollback run did: its result, or (when that is not readable here) its times."""
    try:
        result = await run.state.aresult(raise_on_failure=False)
    except Exception:
        result = None
    if not isinstance(result, dict):
        result = {"rollbackCompletedAt": run.end_time,
                  "rollbackDuration": run.total_run_time.total_seconds() if run.total_run_time else None}
    return RollbackDone(executionId=execution_id, status="RolledBack", rollbackRunId=str(run.id),
                        rollbackCompletedAt=result.get("rollbackCompletedAt"),
                        rollbackDuration=result.get("rollbackDuration"), phases=result.get("phases") or [])


@router.post("/{migrationId}/executions/{executionId}/rollback", response_model=RollbackDone,
             responses={202: {"model": RollbackDone, "description": "the rollback is still running"}})
async def rollback_execution(migrationId: ResourceId, executionId: ResourceId, response: Response,
                             body: RollbackIn | None = None, who: Principal = Depends(acting_as(*CONTRACT_ROLES)),
                             tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                             client: PrefectClient = Depends(prefect_client)) -> RollbackDone:
    """Undo a completed execution on every phase it applied, in reverse order."""
    migration = await load_migration(session, migrationId, who, tenant)
    execution = await load_execution(session, migration, executionId)
    db = await load_database(session, migration.database_id, who, tenant)
    may_change(who, db.environment, "roll back a migration")
    run = await read_run(client, execution.id)
    rollback = await read_run(client, execution.rollback_run_id) if execution.rollback_run_id else None
    status = run_status(run, rollback)
    if execution.dry_run or status != "Completed":
        raise conflict("NOT_ROLLBACKABLE", f"Only a completed execution that applied changes can be rolled back; "
                       f"this one is {'a dry run' if execution.dry_run else status}", status=status)
    await refuse_concurrent(client, migration)
    params = {"execution_id": execution.id, "reason": (body or RollbackIn()).reason, "requested_by": who.username}
    started = await create_run(client, ROLLBACK_DEPLOYMENT, params,
                               [*tenant_tags(migration.tenant_id, who.username), f"schema-migration:{migration.id}"],
                               name=f"rollback {migration.name}")
    execution.rollback_run_id = str(started.id)
    migration.status, migration.execution_id = "RollingBack", execution.id
    await session.commit()
    done = await wait_for_final(client, started.id, ROLLBACK_WAIT_SECONDS)
    migration.status = run_status(run, done)
    await session.commit()
    if not done.state.is_final():
        response.status_code = 202
        return RollbackDone(executionId=execution.id, status="RollingBack", rollbackRunId=str(done.id))
    if not done.state.is_completed():
        raise ApiError(409, "ROLLBACK_FAILED", f"Rollback failed: {done.state.message or done.state.name}",
                       {"rollbackRunId": str(done.id)})
    return await rollback_outcome(done, execution.id)
