"""Migration definitions: create (checked against the target's master: syntax with line and column,
references, risk from the statements), list, read, and validate (optionally a dry run)."""
from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from prefect.client.orchestration import PrefectClient
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import UtcDatetime
from api_shim.auth import Principal, tenant_filter
from api_shim.errors import ApiError, conflict
from api_shim.prefect_runs import prefect_client
from api_shim.ratelimit import limited
from api_shim.routers.jarvis.database_master import visible
from api_shim.routers.schema_orchestrator.common import (
    CONTRACT_ROLES, NAME_PATTERN, ResourceId, RiskLevel, Strategy, acting_as, load_database, load_migration, may_change,
    off_loop, reader,
)
from api_shim.routers.schema_orchestrator.executions import ACTIVE, refresh
from api_shim.store.db import db_session
from api_shim.store.schema_models import SchemaDatabase, SchemaMigration
from connectors.base import MigrationError
from tasks.schema_validate import ValidationResult, approval_required, max_risk, validate_script

router = APIRouter(prefix="/api/v1/migrations")
MigrationStatus = Literal["Draft", "PendingApproval", "Approved", "Running", "RollingBack", "Completed", "Failed",
                          "RolledBack", "Rejected", "Cancelled"]
Tag = Annotated[str, Field(min_length=1, max_length=50)]
Script = Field(min_length=1, max_length=100_000)


class MigrationIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="recorded in each target's migration history")
    description: str | None = Field(None, max_length=2000)
    targetDatabaseId: str = Field(min_length=1, max_length=200, description="a registered database's id or name")
    migrationScript: str = Script
    rollbackScript: str = Script
    strategy: Strategy = "Phased"
    riskLevel: RiskLevel | None = Field(None, description="raises the risk assessed from the statements, never lowers it")
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class MigrationCreated(BaseModel):
    migrationId: str
    name: str
    status: MigrationStatus
    riskLevel: RiskLevel
    requiresApproval: bool
    estimatedDuration: int = Field(description="seconds")
    createdAt: UtcDatetime


class MigrationSummary(BaseModel):
    migrationId: str
    name: str
    status: MigrationStatus
    targetDatabase: str = Field(description="the database's name")
    targetDatabaseId: str
    riskLevel: RiskLevel
    requiresApproval: bool
    createdAt: UtcDatetime


class MigrationView(MigrationSummary):
    description: str | None
    migrationScript: str
    rollbackScript: str
    strategy: Strategy
    tags: list[str]
    author: str
    estimatedDuration: int
    latestExecutionId: str | None
    updatedAt: UtcDatetime


class MigrationList(BaseModel):
    migrations: list[MigrationSummary]
    total: int
    limit: int
    offset: int


class ValidateIn(BaseModel):
    dryRun: bool = Field(True, description="also run both scripts on the master and undo them")


class ScriptProblem(BaseModel):
    script: str
    message: str
    line: int | None = None
    column: int | None = None


class Finding(BaseModel):
    message: str
    recommendation: str


class DependencyCheck(BaseModel):
    hasConflicts: bool
    affectedObjects: list[str]


class ValidationReport(BaseModel):
    isValid: bool
    errors: list[ScriptProblem]
    warnings: list[Finding]
    estimatedDuration: int = Field(description="seconds")
    riskLevel: RiskLevel
    dependencyCheck: DependencyCheck


async def checked(db: SchemaDatabase, script: str, rollback_script: str, dry_run: bool) -> ValidationResult:
    try:
        return await off_loop(validate_script, db.master_ref, script, rollback_script, dry_run)
    except MigrationError as exc:
        raise conflict("DATABASE_UNREACHABLE", f"The target database cannot be checked: {exc}",
                       targetDatabaseId=db.id) from None


def refused(result: ValidationResult) -> ApiError:
    where = lambda e: f" at line {e.line}, column {e.column}" if e.line else ""  # noqa: E731
    return ApiError(400, "VALIDATION_ERROR", "Migration validation failed",
                    [{"field": e.script, "message": f"{e.message}{where(e)}", "line": e.line, "column": e.column}
                     for e in result.errors])


def summary(m: SchemaMigration, db_name: str) -> dict:
    return dict(migrationId=m.id, name=m.name, status=m.status, targetDatabase=db_name, targetDatabaseId=m.database_id,
                riskLevel=m.risk_level, requiresApproval=m.requires_approval, createdAt=m.created_at)


@router.post("", response_model=MigrationCreated, status_code=201,
             dependencies=[Depends(limited(10, 60, "migrations:create"))])
async def create_migration(body: MigrationIn, who: Principal = Depends(acting_as("Developer", "Admin")),
                           tenant: str | None = Depends(tenant_filter),
                           session: AsyncSession = Depends(db_session)) -> MigrationCreated:
    """A Draft migration. Both scripts are checked against the target's master (no dry run); the risk
    comes from the statements, and whether it needs approval from that risk and the database's environment."""
    db = await load_database(session, body.targetDatabaseId, who, tenant, field="targetDatabaseId")
    same = select(SchemaMigration.id).where(SchemaMigration.database_id == db.id, SchemaMigration.name == body.name)
    if (await session.execute(same)).first():
        raise conflict("MIGRATION_EXISTS", f"A migration named {body.name!r} exists for this database", name=body.name)
    result = await checked(db, body.migrationScript, body.rollbackScript, False)
    if not result.is_valid:
        raise refused(result)
    risk = max_risk(result.risk_level, body.riskLevel or "Low")
    migration = SchemaMigration(
        id=f"mig-{uuid.uuid4()}", tenant_id=db.tenant_id, name=body.name, description=body.description,
        database_id=db.id, script=body.migrationScript, rollback_script=body.rollbackScript, strategy=body.strategy,
        declared_risk=body.riskLevel, risk_level=risk, requires_approval=approval_required(risk, db.environment),
        estimated_duration=result.estimated_duration, tags=body.tags, status="Draft", author=who.username)
    session.add(migration)
    await session.commit()
    return MigrationCreated(migrationId=migration.id, name=migration.name, status="Draft", riskLevel=risk,
                            requiresApproval=migration.requires_approval,
                            estimatedDuration=migration.estimated_duration, createdAt=migration.created_at)


@router.get("", response_model=MigrationList)
async def list_migrations(status: MigrationStatus | None = None,
                          database: str | None = Query(None, max_length=200, description="a database's id or name"),
                          limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0, le=1_000_000),
                          who: Principal = Depends(reader), tenant: str | None = Depends(tenant_filter),
                          session: AsyncSession = Depends(db_session),
                          client: PrefectClient = Depends(prefect_client)) -> MigrationList:
    scope = visible(select(SchemaMigration), SchemaMigration, who, tenant)
    await refresh(session, client, list((await session.execute(scope.where(SchemaMigration.status.in_(ACTIVE)))).scalars()))
    stmt = scope.join(SchemaDatabase, SchemaDatabase.id == SchemaMigration.database_id).add_columns(SchemaDatabase.name)
    if status:
        stmt = stmt.where(SchemaMigration.status == status)
    if database:
        stmt = stmt.where((SchemaDatabase.id == database) | (SchemaDatabase.name == database))
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(stmt.order_by(SchemaMigration.created_at.desc()).limit(limit).offset(offset))
    return MigrationList(migrations=[MigrationSummary(**summary(m, name)) for m, name in rows], total=total,
                         limit=limit, offset=offset)


@router.get("/{migrationId}", response_model=MigrationView)
async def get_migration(migrationId: ResourceId, who: Principal = Depends(reader),
                        tenant: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                        client: PrefectClient = Depends(prefect_client)) -> MigrationView:
    migration = await load_migration(session, migrationId, who, tenant)
    await refresh(session, client, [migration])
    db = await session.get(SchemaDatabase, migration.database_id)
    return MigrationView(**summary(migration, db.name), description=migration.description,
                         migrationScript=migration.script, rollbackScript=migration.rollback_script,
                         strategy=migration.strategy, tags=migration.tags, author=migration.author,
                         estimatedDuration=migration.estimated_duration, latestExecutionId=migration.execution_id,
                         updatedAt=migration.updated_at)


@router.post("/{migrationId}/validate", response_model=ValidationReport)
async def validate_migration(migrationId: ResourceId, body: ValidateIn | None = None,
                             who: Principal = Depends(acting_as(*CONTRACT_ROLES)),
                             tenant: str | None = Depends(tenant_filter),
                             session: AsyncSession = Depends(db_session)) -> ValidationReport:
    """Check both scripts against the target's master; with dryRun (the default) also run them there
    and undo them (a dry run on a Production database is for DBAs and Admins)."""
    dry_run = (body or ValidateIn()).dryRun
    migration = await load_migration(session, migrationId, who, tenant)
    db = await load_database(session, migration.database_id, who, tenant)
    if dry_run:
        may_change(who, db.environment, "dry-run a migration")
    result = await checked(db, migration.script, migration.rollback_script, dry_run)
    return ValidationReport(**result.to_contract())
