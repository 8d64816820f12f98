"""Approvals: submit-approval, approve and reject. An approval either gates an execution that waits for it
(a suspended run, resumed through `flows.schema_migration.submit_decision`) or, approved before any
execution, lets the next execution run without waiting (see the package docstring)."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends
from prefect.client.orchestration import PrefectClient
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import UtcDatetime
from api_shim.auth import Principal, tenant_filter
from api_shim.errors import ApiError, conflict
from api_shim.prefect_runs import prefect_client, read_run
from api_shim.routers.schema_orchestrator.common import (
    CONTRACT_ROLES, ResourceId, acting_as, expired, latest_approval, load_migration, new_approval, off_loop,
    open_approval, same_person,
)
from api_shim.routers.schema_orchestrator.executions import refresh
from api_shim.store.db import db_session
from api_shim.store.models import utcnow
from api_shim.store.schema_models import SchemaApproval, SchemaMigration
from connectors.base import MigrationError
from flows.schema_migration import ApprovalExpired, submit_decision

router = APIRouter(prefix="/api/v1/migrations")
admins = acting_as("Admin")
UNAPPROVABLE = ("Running", "RollingBack", "Completed")


class SubmitIn(BaseModel):
    notes: str = Field("", max_length=2000)


class ApprovalSubmitted(BaseModel):
    approvalId: str
    migrationId: str
    status: Literal["Pending"]
    submittedAt: UtcDatetime
    expiresAt: UtcDatetime
    executionId: str | None = Field(None, description="the execution waiting for this approval, if one does")


class ReviewIn(BaseModel):
    notes: str = Field("", max_length=2000)


class ApprovalReviewed(BaseModel):
    approvalId: str
    status: Literal["Approved", "Rejected"]
    reviewedBy: str
    reviewedAt: UtcDatetime
    notes: str
    executionId: str | None = Field(None, description="the execution this decision resumed, if any")


async def waiting_run_expiry(client: PrefectClient, migration: SchemaMigration) -> dt.datetime | None:
    """When the approval of the migration's waiting run expires (None when no run waits)."""
    if migration.status != "PendingApproval" or not migration.execution_id:
        return None
    run = await read_run(client, migration.execution_id)
    if run is None or run.state is None or not run.state.is_paused():
        return None
    return run.state.state_details.pause_timeout or utcnow()


@router.post("/{migrationId}/submit-approval", response_model=ApprovalSubmitted, status_code=201)
async def submit_for_approval(migrationId: ResourceId, body: SubmitIn | None = None,
                              who: Principal = Depends(acting_as(*CONTRACT_ROLES)),
                              tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                              client: PrefectClient = Depends(prefect_client)) -> ApprovalSubmitted:
    """Ask an Admin to approve: for the execution waiting already, or before executing."""
    migration = await load_migration(session, migrationId, who, tenant)
    await refresh(session, client, [migration])
    if migration.status in UNAPPROVABLE:
        raise conflict("NOT_APPROVABLE", f"Nothing to approve: the migration is {migration.status}",
                       status=migration.status)
    current = await open_approval(session, migration.id)
    if current is not None:
        raise conflict("APPROVAL_EXISTS", f"An approval is {current.status.lower()} already", approvalId=current.id)
    waits_until = await waiting_run_expiry(client, migration)
    approval = new_approval(migration, who.username, waits_until, migration.execution_id if waits_until else None)
    approval.notes = (body or SubmitIn()).notes or None
    session.add(approval)
    if waits_until is None:
        migration.status, migration.execution_id = "PendingApproval", None
    await session.commit()
    return ApprovalSubmitted(approvalId=approval.id, migrationId=migration.id, status="Pending",
                             submittedAt=approval.submitted_at, expiresAt=approval.expires_at,
                             executionId=approval.execution_id)


async def pending_approval(session: AsyncSession, client: PrefectClient, migration: SchemaMigration) -> SchemaApproval:
    """The request to decide on: the latest pending one, or one for a run that waits without a request."""
    approval = await latest_approval(session, migration.id, "Pending")
    if approval is None:
        waits_until = await waiting_run_expiry(client, migration)
        if waits_until is None:
            raise conflict("NO_PENDING_APPROVAL", "No approval is pending for this migration; submit it first")
        approval = new_approval(migration, migration.author, waits_until, migration.execution_id)
        session.add(approval)
    return approval


async def decide(migration_id: str, approved: bool, notes: str, who: Principal, tenant: str | None,
                 session: AsyncSession, client: PrefectClient) -> ApprovalReviewed:
    migration = await load_migration(session, migration_id, who, tenant)
    if approved and same_person(who.username, migration.author):
        raise ApiError(403, "FORBIDDEN", "The author of a migration cannot approve it",
                       {"reviewer": f"{who.username} wrote this migration; another Admin must approve it"})
    await refresh(session, client, [migration])
    approval = await pending_approval(session, client, migration)
    try:
        if expired(approval):
            raise ApprovalExpired(f"the approval expired at {approval.expires_at.isoformat()}")
        if approval.execution_id:
            await off_loop(submit_decision, approval.execution_id, who.username, approved, notes)
    except ApprovalExpired as exc:
        approval.status = "Expired"
        await session.commit()
        raise ApiError(409, "APPROVAL_EXPIRED", f"Approval expired: {exc}", {"approvalId": approval.id}) from None
    except MigrationError as exc:
        raise conflict("NOT_WAITING", str(exc), approvalId=approval.id) from None
    approval.status, approval.reviewer, approval.reviewed_at = ("Approved" if approved else "Rejected"), who.username, utcnow()
    approval.notes = notes or approval.notes
    migration.status = ("Running" if approval.execution_id else "Approved") if approved else "Rejected"
    await session.commit()
    return ApprovalReviewed(approvalId=approval.id, status=approval.status, reviewedBy=who.username,
                            reviewedAt=approval.reviewed_at, notes=notes, executionId=approval.execution_id)


@router.post("/{migrationId}/approve", response_model=ApprovalReviewed)
async def approve_migration(migrationId: ResourceId, body: ReviewIn | None = None, who: Principal = Depends(admins),
                            tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                            client: PrefectClient = Depends(prefect_client)) -> ApprovalReviewed:
    """Admin only, never the author. A waiting execution resumes; an expired approval is 409."""
    return await decide(migrationId, True, (body or ReviewIn()).notes, who, tenant, session, client)


@router.post("/{migrationId}/reject", response_model=ApprovalReviewed)
async def reject_migration(migrationId: ResourceId, body: ReviewIn | None = None, who: Principal = Depends(admins),
                           tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                           client: PrefectClient = Depends(prefect_client)) -> ApprovalReviewed:
    """Admin only. A waiting execution ends Rejected."""
    return await decide(migrationId, False, (body or ReviewIn()).notes, who, tenant, session, client)
