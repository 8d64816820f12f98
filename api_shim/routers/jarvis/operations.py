"""/api/operations: an operation IS a flow run of `migrate-tables/on-demand`.

The store keeps the operation id, its masked config and the block references of its credentials; status,
start and end times, rows and errors come from the flow run and its `migration-report` artifact. A
scheduled operation is a Prefect flow run scheduled at that time (a time without a zone is IST); one
without a schedule waits, held, until it is executed.
"""
from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.auth import Principal, owning_tenant, require_scopes, tenant_filter
from api_shim.credentials import store_endpoint
from api_shim.errors import JARVIS_ERROR_RESPONSES, ApiError, conflict, not_found
from api_shim.jarvis_config import (DEPLOYMENT, MASK, ROW_ID, UtcTime, WAIT_SECONDS, JarvisConfig,
                                    JarvisResult, endpoints_for, flow_parameters, in_ist, parse_schedule)
from api_shim.prefect_runs import (create_run, find_runs, prefect_client, release_run, status_of, tenant_tags,
                                   wait_for_final)
from api_shim.routers.jarvis.database_master import JarvisMessage, load_master, visible
from api_shim.routers.jarvis.service import forget_credentials, probe_ref, result_of_run
from api_shim.store.db import db_session
from api_shim.store.jarvis_models import JarvisDatabaseMaster, JarvisOperation
from api_shim.store.models import as_utc
from blocks.resolve import resolve_endpoint

router = APIRouter(prefix="/api/operations", tags=["jarvis: operations"], responses=JARVIS_ERROR_RESPONSES)
readers = require_scopes("migrations:read")
writers = require_scopes("migrations:write")

Status = Literal["pending", "running", "completed", "failed", "cancelled"]
STATUSES = ["pending", "running", "completed", "failed", "cancelled"]
_FROM_RUN = {"scheduled": "pending", "starting": "running", "paused": "running", "cancelling": "cancelled"}


class OperationIn(BaseModel):
    source_id: int = Field(ge=1, le=2**31 - 1, description="id of a registered database master")
    schedule: str | None = Field(None, max_length=64, description="ISO time; without a zone it is IST (UTC+05:30). "
                                                                  "Omitted: the operation waits for execute")
    operation_type: Literal["full", "incremental"] = "full"
    config_data: JarvisConfig


class OperationUpdate(BaseModel):
    source_id: int | None = Field(None, ge=1, le=2**31 - 1)
    schedule: str | None = Field(None, max_length=64)
    operation_type: Literal["full", "incremental"] | None = None
    config_data: JarvisConfig | None = Field(None, description=f"passwords sent as {MASK!r} keep the stored ones")


class OperationView(BaseModel):
    id: int
    source_id: int
    source_name: str
    user_id: int | None
    username: str
    schedule: str | None = Field(description="the scheduled time, in IST")
    status: Status
    operation_type: str
    config_data: dict = Field(description="the migration config, passwords masked")
    result_data: JarvisResult | None
    error_message: str | None
    created_at: UtcTime
    updated_at: UtcTime
    started_at: UtcTime | None
    completed_at: UtcTime | None
    flow_run_id: str | None = Field(description="the Prefect flow run that is this operation's current execution")


class OperationSaved(BaseModel):
    message: str
    operation: OperationView


class OperationOne(BaseModel):
    operation: OperationView


class OperationList(BaseModel):
    operations: list[OperationView]


class JarvisResultDetails(JarvisResult):
    tables_migrated_count: int
    tables_failed_count: int
    total_records: int


class OperationStatus(BaseModel):
    operation_id: int
    status: Status
    is_completed: bool
    is_success: bool
    operation_type: str
    source_name: str
    schedule_time: str | None
    started_at: UtcTime | None
    completed_at: UtcTime | None
    created_at: UtcTime
    error_message: str | None
    duration_seconds: float | None
    duration_formatted: str | None
    migration_results: JarvisResultDetails | None
    flow_run_id: str | None


class RecentOperation(BaseModel):
    id: int
    status: Status
    operation_type: str
    source_name: str
    created_at: UtcTime
    completed_at: UtcTime | None


class OperationsSummary(BaseModel):
    total_operations: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    recent_operations: list[RecentOperation]


class Executed(BaseModel):
    message: str
    operation: OperationView
    microservice_response: JarvisResult | None
    status_code: int = 200


@dataclass
class RunFacts:
    """What an operation's flow run says about it."""
    status: str
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    error_message: str | None = None
    result: JarvisResult | None = None


async def facts_of(client: PrefectClient, op: JarvisOperation, run: FlowRun | None, results: bool) -> RunFacts:
    if run is None:
        return RunFacts("failed", error_message=f"flow run {op.flow_run_id} no longer exists in Prefect")
    status = _FROM_RUN.get(status_of(run), status_of(run))
    facts = RunFacts(status, run.start_time)
    if not (run.state and run.state.is_final()):
        return facts
    facts.completed_at = run.end_time
    if results or status != "completed":
        facts.result = await result_of_run(client, run, op.config_data.get("tables"))
        facts.error_message = None if facts.result.success else facts.result.errors[0]
    return facts


async def facts_for(client: PrefectClient, ops: list[JarvisOperation], results: bool = True) -> dict[int, RunFacts]:
    """What each operation's run says; `results` false skips reading the reports of completed runs."""
    ids = [UUID(op.flow_run_id) for op in ops if op.flow_run_id]
    runs: dict[str, FlowRun] = {}
    for start in range(0, len(ids), 200):
        runs.update({str(r.id): r for r in await find_runs(client, ["jarvis"], ids=ids[start:start + 200])})
    return {op.id: await facts_of(client, op, runs.get(op.flow_run_id or ""), results) for op in ops}


def operation_view(op: JarvisOperation, source_name: str, facts: RunFacts) -> OperationView:
    return OperationView(
        id=op.id, source_id=op.source_id, source_name=source_name, user_id=op.user_id, username=op.username,
        schedule=in_ist(op.schedule_at), status=facts.status, operation_type=op.operation_type,
        config_data=op.config_data, result_data=facts.result, error_message=facts.error_message,
        created_at=op.created_at, updated_at=op.updated_at, started_at=facts.started_at,
        completed_at=facts.completed_at, flow_run_id=op.flow_run_id)


def _with_names():
    return select(JarvisOperation, JarvisDatabaseMaster.name).join(
        JarvisDatabaseMaster, JarvisDatabaseMaster.id == JarvisOperation.source_id)


async def load_operation(session: AsyncSession, op_id: int, who: Principal,
                         tenant: str | None) -> tuple[JarvisOperation, str]:
    stmt = visible(_with_names().where(JarvisOperation.id == op_id), JarvisOperation, who, tenant)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise not_found("operation", "id", op_id)
    return row[0], row[1]


async def one_view(client: PrefectClient, op: JarvisOperation, source_name: str) -> tuple[OperationView, RunFacts]:
    facts = (await facts_for(client, [op]))[op.id]
    return operation_view(op, source_name, facts), facts


async def saved(client: PrefectClient, op: JarvisOperation, source_name: str, message: str) -> OperationSaved:
    return OperationSaved(message=message, operation=(await one_view(client, op, source_name))[0])


async def save_credentials(config: JarvisConfig, tenant: str | None) -> tuple[str, str]:
    """Both endpoints' credentials as tenant-owned blocks; returns their references."""
    source, destination = endpoints_for(config)
    return (await store_endpoint(source, tenant, "jarvis-source"),
            await store_endpoint(destination, tenant, "jarvis-destination"))


async def keep_stored_passwords(config: JarvisConfig, op: JarvisOperation) -> JarvisConfig:
    """Sides whose password is the mask take the password stored for the operation."""
    for side, ref in (("source", op.source_ref), ("destination", op.destination_ref)):
        settings = getattr(config, side)
        if settings.password is not None and settings.password.get_secret_value() == MASK:
            try:
                settings.password = (await asyncio.to_thread(resolve_endpoint, ref)).password
            except Exception:
                raise ApiError(400, "VALIDATION_ERROR", "Request validation failed", {"validation_errors": [
                    {"field": f"config_data.{side}.password", "message": "the stored password is gone; send it"}]}
                ) from None
    return config


async def start_run(client: PrefectClient, op: JarvisOperation, *, hold: bool = False,
                    when: dt.datetime | None = None) -> None:
    config = JarvisConfig.model_validate(op.config_data)
    run = await create_run(client, DEPLOYMENT, flow_parameters(config, op.source_ref, op.destination_ref),
                           tenant_tags(op.tenant_id, op.username) + ["jarvis", f"jarvis-operation:{op.id}"],
                           name=f"jarvis-operation-{op.id}", hold=hold, scheduled_at=when)
    op.flow_run_id = str(run.id)


async def drop_unstarted_run(client: PrefectClient, op: JarvisOperation, facts: RunFacts) -> None:
    if facts.status == "pending" and op.flow_run_id:
        await client.delete_flow_run(UUID(op.flow_run_id))


def refuse_if_running(facts: RunFacts, op: JarvisOperation) -> None:
    if facts.status == "running":
        raise conflict("OPERATION_RUNNING", "Operation is already running", id=op.id, flow_run_id=op.flow_run_id)


@router.get("/summary", response_model=OperationsSummary)
async def summary(who: Principal = Depends(readers), tenant: str | None = Depends(tenant_filter),
                  session: AsyncSession = Depends(db_session),
                  client: PrefectClient = Depends(prefect_client)) -> OperationsSummary:
    rows = (await session.execute(visible(_with_names(), JarvisOperation, who, tenant)
                                  .order_by(JarvisOperation.created_at.desc(), JarvisOperation.id.desc()))).all()
    facts = await facts_for(client, [op for op, _ in rows], results=False)
    by_status = dict.fromkeys(STATUSES[:4], 0)
    by_type = {"full": 0, "incremental": 0}
    for op, _ in rows:
        by_status[facts[op.id].status] = by_status.get(facts[op.id].status, 0) + 1
        by_type[op.operation_type] = by_type.get(op.operation_type, 0) + 1
    recent = [RecentOperation(id=op.id, status=facts[op.id].status, operation_type=op.operation_type,
                              source_name=name, created_at=op.created_at,
                              completed_at=facts[op.id].completed_at) for op, name in rows[:10]]
    return OperationsSummary(total_operations=len(rows), by_status=by_status, by_type=by_type,
                             recent_operations=recent)


@router.get("", response_model=OperationList)
async def list_operations(who: Principal = Depends(readers), tenant: str | None = Depends(tenant_filter),
                          session: AsyncSession = Depends(db_session),
                          client: PrefectClient = Depends(prefect_client)) -> OperationList:
    rows = (await session.execute(visible(_with_names(), JarvisOperation, who, tenant)
                                  .order_by(JarvisOperation.id.desc()))).all()
    facts = await facts_for(client, [op for op, _ in rows])
    return OperationList(operations=[operation_view(op, name, facts[op.id]) for op, name in rows])


@router.post("", response_model=OperationSaved, status_code=201)
async def create_operation(body: OperationIn, who: Principal = Depends(writers),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> OperationSaved:
    master = await load_master(session, body.source_id, who, tenant, key="source_id")
    when = parse_schedule(body.schedule)
    config = body.config_data.model_copy(update={"operation_type": body.operation_type})
    owner = owning_tenant(who, tenant)
    refs = await save_credentials(config, owner)
    op = JarvisOperation(tenant_id=owner, user_id=who.user_id, username=who.username, source_id=master.id,
                         operation_type=body.operation_type, schedule_at=when, config_data=config.masked(),
                         source_ref=refs[0], destination_ref=refs[1])
    session.add(op)
    await session.flush()
    try:
        await start_run(client, op, hold=when is None, when=when)
    except BaseException:
        await session.rollback()
        await forget_credentials(client, refs)
        raise
    await session.commit()
    return await saved(client, op, master.name, "Operation created successfully")


@router.get("/{op_id}", response_model=OperationOne)
async def get_operation(op_id: ROW_ID, who: Principal = Depends(readers),
                        tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                        client: PrefectClient = Depends(prefect_client)) -> OperationOne:
    op, name = await load_operation(session, op_id, who, tenant)
    return OperationOne(operation=(await one_view(client, op, name))[0])


@router.get("/{op_id}/status", response_model=OperationStatus)
async def operation_status(op_id: ROW_ID, who: Principal = Depends(readers),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> OperationStatus:
    op, name = await load_operation(session, op_id, who, tenant)
    view, facts = await one_view(client, op, name)
    seconds = ((facts.completed_at - facts.started_at).total_seconds()
               if facts.completed_at and facts.started_at else None)
    return OperationStatus(
        operation_id=op.id, status=view.status, is_completed=view.status in ("completed", "failed"),
        is_success=view.status == "completed", operation_type=op.operation_type, source_name=name,
        schedule_time=view.schedule, started_at=view.started_at, completed_at=view.completed_at,
        created_at=view.created_at, error_message=view.error_message,
        duration_seconds=round(seconds, 3) if seconds is not None else None,
        duration_formatted=formatted(seconds), migration_results=detailed(facts.result), flow_run_id=op.flow_run_id)


def formatted(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    hours, rest = divmod(int(round(seconds)), 3600)
    return (f"{hours}h " if hours else "") + f"{rest // 60}m {rest % 60}s"


def detailed(result: JarvisResult | None) -> JarvisResultDetails | None:
    if result is None:
        return None
    return JarvisResultDetails(**result.model_dump(), tables_migrated_count=len(result.tables_migrated),
                            tables_failed_count=len(result.tables_failed),
                            total_records=sum(t.records for t in result.tables_migrated))


@router.put("/{op_id}", response_model=OperationSaved)
async def update_operation(op_id: ROW_ID, body: OperationUpdate, who: Principal = Depends(writers),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> OperationSaved:
    op, name = await load_operation(session, op_id, who, tenant)
    facts = (await facts_for(client, [op]))[op.id]
    refuse_if_running(facts, op)
    if body.source_id is not None:
        master = await load_master(session, body.source_id, who, tenant, key="source_id")
        op.source_id, name = master.id, master.name
    old_refs = []
    if body.config_data is not None or body.operation_type is not None:
        config = body.config_data or JarvisConfig.model_validate(op.config_data)
        config = config.model_copy(update={"operation_type": body.operation_type or config.operation_type})
        if body.config_data is not None:
            config = await keep_stored_passwords(config, op)
            old_refs = [op.source_ref, op.destination_ref]
            op.source_ref, op.destination_ref = await save_credentials(config, op.tenant_id)
        op.operation_type, op.config_data = config.operation_type, config.masked()
    rescheduled = "schedule" in body.model_fields_set
    if rescheduled:
        op.schedule_at = parse_schedule(body.schedule)
    if facts.status == "pending" or rescheduled:
        await drop_unstarted_run(client, op, facts)
        await start_run(client, op, hold=op.schedule_at is None, when=as_utc(op.schedule_at))
    await session.commit()
    await forget_credentials(client, old_refs)
    return await saved(client, op, name, "Operation updated successfully")


@router.delete("/{op_id}", response_model=JarvisMessage)
async def delete_operation(op_id: ROW_ID, who: Principal = Depends(writers),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> JarvisMessage:
    """Delete the operation and its stored credentials; a run not started yet is deleted too."""
    op, _ = await load_operation(session, op_id, who, tenant)
    facts = (await facts_for(client, [op]))[op.id]
    refuse_if_running(facts, op)
    await drop_unstarted_run(client, op, facts)
    await session.delete(op)
    await session.commit()
    await forget_credentials(client, [op.source_ref, op.destination_ref])
    return JarvisMessage(message="Operation deleted successfully")


@router.post("/{op_id}/execute", response_model=Executed)
async def execute_operation(op_id: ROW_ID, force: bool = Query(False, description="run now even if scheduled later "
                                                                               "or already completed"),
                            who: Principal = Depends(writers), tenant: str | None = Depends(tenant_filter),
                            session: AsyncSession = Depends(db_session),
                            client: PrefectClient = Depends(prefect_client)) -> Executed:
    """Test both connections, run the operation now and wait for it to end."""
    op, name = await load_operation(session, op_id, who, tenant)
    facts = (await facts_for(client, [op]))[op.id]
    refuse_if_running(facts, op)
    refuse_without_force(op, facts, force)
    await check_connections(op)
    if facts.status == "pending":
        await release_run(client, op.flow_run_id)
    else:
        await start_run(client, op)
        await session.commit()
    await wait_for_final(client, UUID(op.flow_run_id), WAIT_SECONDS)
    view, facts = await one_view(client, op, name)
    message = {"completed": "Operation executed successfully", "failed": "Operation failed"}.get(
        facts.status, f"Operation is {facts.status}; follow it with GET /api/operations/{op.id}/status")
    return Executed(message=message, operation=view, microservice_response=facts.result)


def refuse_without_force(op: JarvisOperation, facts: RunFacts, force: bool) -> None:
    if force:
        return
    if facts.status == "completed":
        raise conflict("OPERATION_ALREADY_COMPLETED", "Operation already completed; execute with force=true to run "
                       "it again", id=op.id)
    due = as_utc(op.schedule_at)
    if facts.status == "pending" and due is not None and due > dt.datetime.now(dt.timezone.utc):
        raise conflict("OPERATION_SCHEDULED", "Operation is scheduled for later; execute with force=true to run "
                       "it now", id=op.id, schedule=in_ist(due))


async def check_connections(op: JarvisOperation) -> None:
    for side, ref, write in (("Source", op.source_ref, False), ("Destination", op.destination_ref, True)):
        error = await asyncio.to_thread(probe_ref, ref, write)
        if error:
            raise ApiError(400, "CONNECTION_TEST_FAILED", f"{side} connection test failed",
                           {"operation": {"id": op.id, "error_message": f"{side} connection failed: {error}"}})
