"""What the Schema Orchestrator routers share: vocabularies, who may do what, loading rows of the
caller's tenant, phases resolved to database blocks, and engine calls run off the event loop."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, Path
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from api_shim.auth import Principal, require_roles, require_scopes
from api_shim.errors import ApiError, not_found
from api_shim.jarvis_config import MASK
from api_shim.routers.jarvis.database_master import visible
from api_shim.store.models import as_utc, utcnow
from api_shim.store.schema_models import SchemaApproval, SchemaDatabase, SchemaMigration
from connectors.endpoint import Endpoint
from flows.schema_migration import APPROVAL_TIMEOUT_SECONDS
from tasks.connections import close_all

Environment = Literal["Development", "QA", "Staging", "Production"]
DatabaseType = Literal["PostgreSQL", "MySQL", "MariaDB", "ClickHouse"]
RiskLevel = Literal["Low", "Medium", "High", "Critical"]
# Phased: the phases in order (replicas, then master), measured between; Direct: the master alone
Strategy = Literal["Phased", "Direct"]
DEPLOYMENT = "schema-migration/on-demand"
ROLLBACK_DEPLOYMENT = "schema-rollback/on-demand"
MASTER = "master"
CONTRACT_ROLES = ("Developer", "DBA", "Admin")
PRODUCTION_ROLES = ("DBA", "Admin")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
ResourceId = Annotated[str, Path(min_length=1, max_length=64, description="the id the create call returned")]

reader = require_scopes("migrations:read")
_writes = require_scopes("migrations:write")


def acting_as(*roles: str):
    """A dependency: a caller allowed to write (scope) whose role is one of `roles`."""
    role_check = require_roles(*roles)

    async def check(who: Principal = Depends(_writes)) -> Principal:
        return await role_check(who)
    return check


def may_change(who: Principal, environment: str, action: str) -> None:
    """Production databases are changed by DBAs and Admins; other environments by Developers too."""
    allowed = PRODUCTION_ROLES if environment == "Production" else CONTRACT_ROLES
    if who.role not in allowed:
        raise ApiError(403, "FORBIDDEN", f"Your role may not {action} on a {environment} database",
                       {"role": f"{who.role}; required: {' or '.join(allowed)}"})


def invalid(field: str, message: str, **extra: Any) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Request validation failed", [{"field": field, "message": message, **extra}])


async def load_database(session: AsyncSession, key: str, who: Principal, tenant: str | None,
                        field: str | None = None) -> SchemaDatabase:
    """The database with id (or name) `key` that the caller may see; 404 (or 400 naming `field`) otherwise."""
    by_key = select(SchemaDatabase).where((SchemaDatabase.id == key) | (SchemaDatabase.name == key))
    found = (await session.execute(visible(by_key, SchemaDatabase, who, tenant)
                                   .order_by(SchemaDatabase.created_at.desc()))).scalars().first()
    if found is None:
        if field:
            raise invalid(field, f"no registered database {key!r}")
        raise not_found("database", "databaseId", key)
    return found


async def load_migration(session: AsyncSession, migration_id: str, who: Principal,
                         tenant: str | None) -> SchemaMigration:
    stmt = visible(select(SchemaMigration).where(SchemaMigration.id == migration_id), SchemaMigration, who, tenant)
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise not_found("migration", "migrationId", migration_id)
    return found


def masked(endpoint: Endpoint) -> str:
    """A connection string that says where, never with what password."""
    if endpoint.path:
        parts = {"Path": endpoint.path, "Database": endpoint.database}
    else:
        parts = {"Host": endpoint.host, "Port": endpoint.port, "Database": endpoint.database,
                 "Username": endpoint.user}
    parts["Password"] = MASK if endpoint.secret() else None
    return ";".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))


def phase_targets(db: SchemaDatabase, names: list[str] | None) -> list[dict]:
    """[{name, endpoint}] for phase names (replica ids and `master`); default: every replica, then master."""
    refs = {r["replicaId"]: r["ref"] for r in db.replicas}
    refs[MASTER] = db.master_ref
    names = names or [*(r["replicaId"] for r in db.replicas), MASTER]
    unknown = [n for n in names if n not in refs]
    if unknown:
        raise invalid("phases", f"unknown phase {unknown[0]!r}; this database has {', '.join(refs)}")
    if len(set(names)) != len(names):
        raise invalid("phases", "a phase is named twice")
    return [{"name": n, "endpoint": refs[n]} for n in names]


async def off_loop(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous engine call (it opens database connections) in a worker thread, closing them after."""
    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            close_all()
    return await run_in_threadpool(call)



def same_person(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def new_approval(migration: SchemaMigration, by: str, expires_at: dt.datetime | None = None,
                 execution_id: str | None = None) -> SchemaApproval:
    now = utcnow()
    return SchemaApproval(id=f"appr-{uuid.uuid4().hex[:12]}", migration_id=migration.id, status="Pending",
                          submitted_by=by, submitted_at=now, execution_id=execution_id,
                          expires_at=expires_at or now + dt.timedelta(seconds=APPROVAL_TIMEOUT_SECONDS))


def expired(approval: SchemaApproval) -> bool:
    return as_utc(approval.expires_at) <= utcnow()


async def latest_approval(session: AsyncSession, migration_id: str, status: str) -> SchemaApproval | None:
    stmt = (select(SchemaApproval).where(SchemaApproval.migration_id == migration_id, SchemaApproval.status == status)
            .order_by(SchemaApproval.submitted_at.desc()))
    return (await session.execute(stmt)).scalars().first()


async def open_approval(session: AsyncSession, migration_id: str) -> SchemaApproval | None:
    """The approval an execution goes by: a pending request, or an approval not used by a run yet (unexpired)."""
    for status in ("Pending", "Approved"):
        found = await latest_approval(session, migration_id, status)
        if found is not None and not expired(found) and (status == "Pending" or found.execution_id is None):
            return found
    return None
