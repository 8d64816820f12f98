"""/api/v1/databases: a database cluster (master and replicas) whose credentials become tenant-owned
Prefect blocks. Responses carry masked connection strings and health measured on the servers."""
from __future__ import annotations

import asyncio
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import UtcDatetime
from api_shim.auth import Principal, owning_tenant, tenant_filter
from api_shim.credentials import store_endpoint
from api_shim.errors import conflict
from api_shim.routers.jarvis.database_master import visible
from api_shim.routers.schema_orchestrator.common import (
    CONTRACT_ROLES, MASTER, DatabaseType, Environment, ResourceId, acting_as, invalid, load_database, masked,
    may_change, off_loop, reader,
)
from api_shim.store.db import db_session
from api_shim.store.schema_models import SchemaDatabase
from connectors.base import MigrationError
from connectors.endpoint import ENGINE_ALIASES, Endpoint
from tasks.probes import health

router = APIRouter(prefix="/api/v1/databases")
ReplicaRole = Literal["AsyncReplica", "SyncReplica", "LogicalReplica"]


class ReplicaIn(BaseModel):
    replicaId: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    connectionString: SecretStr = Field(min_length=1, max_length=2000,
                                        description="Host=..;Port=..;Database=..;Username=..;Password=.. or a URL")
    role: ReplicaRole = "AsyncReplica"


class DatabaseIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    type: DatabaseType
    environment: Environment
    masterConnectionString: SecretStr = Field(min_length=1, max_length=2000,
                                              description="Host=..;Port=..;Database=..;Username=..;Password=.. or a URL")
    replicas: list[ReplicaIn] = Field(default_factory=list, max_length=16)

    @field_validator("replicas")
    @classmethod
    def distinct_ids(cls, replicas: list[ReplicaIn]) -> list[ReplicaIn]:
        ids = [r.replicaId for r in replicas]
        if MASTER in ids or len(set(ids)) != len(ids):
            raise ValueError(f"replica ids must be distinct and not {MASTER!r}")
        return replicas


class Health(BaseModel):
    isHealthy: bool
    activeConnections: int
    replicationLag: float | None = Field(description="seconds behind the master (the largest of the replicas)")
    error: str | None = None


class ReplicaView(BaseModel):
    replicaId: str
    role: ReplicaRole
    connectionString: str = Field(description="masked")
    health: Health | None = None


class DatabaseView(BaseModel):
    databaseId: str
    name: str
    type: DatabaseType
    environment: Environment
    masterConnectionString: str = Field(description="masked")
    replicas: list[ReplicaView]
    health: Health | None = Field(None, description="measured now (not in lists)")
    createdAt: UtcDatetime


class DatabaseList(BaseModel):
    databases: list[DatabaseView]
    total: int
    limit: int
    offset: int


def parsed(field: str, text: SecretStr, engine: str, label: str) -> Endpoint:
    try:
        endpoint = Endpoint.from_connection_string(text.get_secret_value(), engine, label=label)
    except MigrationError as exc:
        raise invalid(field, str(exc)) from None
    if endpoint.engine != ENGINE_ALIASES[engine.lower()]:
        raise invalid(field, f"this connection string is for {endpoint.engine}, not {engine}")
    return endpoint


async def stored(field: str, endpoint: Endpoint, owner: str | None) -> str:
    try:
        return await store_endpoint(endpoint, owner, "schema-db")
    except ValueError:  # the block refused a value (its message could quote it)
        raise invalid(field, "these connection settings cannot be stored") from None


def health_of(ref: str) -> dict:
    """tasks.probes.health, with faults it does not translate (a host that does not resolve...) as unhealthy."""
    try:
        return health(ref)
    except Exception as exc:
        return {"isHealthy": False, "activeConnections": 0, "replicationLag": None,
                "error": f"cannot connect ({type(exc).__name__})"}


async def measured(db: SchemaDatabase) -> tuple[Health, list[Health]]:
    """The cluster's health (master's connections, the replicas' largest lag) and each replica's."""
    found = await asyncio.gather(*(off_loop(health_of, ref) for ref in [db.master_ref, *(r["ref"] for r in db.replicas)]))
    master, replicas = Health(**found[0]), [Health(**h) for h in found[1:]]
    lags = [r.replicationLag for r in replicas if r.replicationLag is not None]
    return Health(isHealthy=all(h.isHealthy for h in [master, *replicas]), activeConnections=master.activeConnections,
                  replicationLag=max(lags) if lags else master.replicationLag,
                  error=next((h.error for h in [master, *replicas] if h.error), None)), replicas


def view(db: SchemaDatabase, cluster: Health | None = None, replicas: list[Health] | None = None) -> DatabaseView:
    return DatabaseView(
        databaseId=db.id, name=db.name, type=db.type, environment=db.environment, masterConnectionString=db.master_masked,
        replicas=[ReplicaView(replicaId=r["replicaId"], role=r["role"], connectionString=r["masked"],
                              health=replicas[i] if replicas else None) for i, r in enumerate(db.replicas)],
        health=cluster, createdAt=db.created_at)


@router.post("", response_model=DatabaseView, status_code=201)
async def register_database(body: DatabaseIn, who: Principal = Depends(acting_as(*CONTRACT_ROLES)),
                            tenant: str | None = Depends(tenant_filter),
                            session: AsyncSession = Depends(db_session)) -> DatabaseView:
    """Register a cluster: its connection strings are stored as Prefect blocks of the tenant; 201 with
    health measured on the servers."""
    may_change(who, body.environment, "register a database")
    owner = owning_tenant(who, tenant)
    taken = select(SchemaDatabase.id).where(SchemaDatabase.name == body.name, SchemaDatabase.tenant_id == owner)
    if (await session.execute(taken)).first():
        raise conflict("DATABASE_EXISTS", f"A database named {body.name!r} is registered already", name=body.name)
    master = parsed("masterConnectionString", body.masterConnectionString, body.type, body.name)
    replicas = [(r, parsed(f"replicas.{i}.connectionString", r.connectionString, body.type, r.replicaId))
                for i, r in enumerate(body.replicas)]
    db = SchemaDatabase(id=f"db-{uuid.uuid4().hex[:12]}", tenant_id=owner, name=body.name, type=body.type,
                        environment=body.environment, master_masked=masked(master), created_by=who.username,
                        master_ref=await stored("masterConnectionString", master, owner))
    db.replicas = [{"replicaId": r.replicaId, "role": r.role, "masked": masked(ep),
                    "ref": await stored(f"replicas.{i}.connectionString", ep, owner)}
                   for i, (r, ep) in enumerate(replicas)]
    session.add(db)
    await session.commit()
    return view(db, *await measured(db))


@router.get("", response_model=DatabaseList)
async def list_databases(environment: Environment | None = None, limit: int = Query(20, ge=1, le=100),
                         offset: int = Query(0, ge=0, le=1_000_000), who: Principal = Depends(reader),
                         tenant: str | None = Depends(tenant_filter),
                         session: AsyncSession = Depends(db_session)) -> DatabaseList:
    stmt = visible(select(SchemaDatabase), SchemaDatabase, who, tenant)
    if environment:
        stmt = stmt.where(SchemaDatabase.environment == environment)
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = (await session.execute(stmt.order_by(SchemaDatabase.created_at.desc()).limit(limit).offset(offset))).scalars()
    return DatabaseList(databases=[view(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{databaseId}", response_model=DatabaseView)
async def get_database(databaseId: ResourceId, who: Principal = Depends(reader),
                       tenant: str | None = Depends(tenant_filter),
                       session: AsyncSession = Depends(db_session)) -> DatabaseView:
    """The database (by id or name) with health measured now."""
    db = await load_database(session, databaseId, who, tenant)
    return view(db, *await measured(db))
