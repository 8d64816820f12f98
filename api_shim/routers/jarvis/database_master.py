"""/api/database-master: the registry of migration services an operation names as its `source_id`."""
from __future__ import annotations


from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.auth import Principal, owning_tenant, require_scopes, tenant_filter
from api_shim.jarvis_config import ROW_ID, UtcTime
from api_shim.errors import JARVIS_ERROR_RESPONSES, conflict, not_found
from api_shim.store.db import db_session
from api_shim.store.jarvis_models import JarvisDatabaseMaster, JarvisOperation

router = APIRouter(prefix="/api/database-master", tags=["jarvis: database master"],
                   responses=JARVIS_ERROR_RESPONSES)
readers = require_scopes("migrations:read")
writers = require_scopes("migrations:write")


class DatabaseMasterIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    service_url: str = Field(max_length=2000, pattern=r"^https?://\S+$", description="an http:// or https:// URL")


class DatabaseMaster(BaseModel):
    id: int
    name: str
    service_url: str
    created_at: UtcTime
    updated_at: UtcTime


class DatabaseMasterSaved(BaseModel):
    message: str
    database: DatabaseMaster


class DatabaseMasterOne(BaseModel):
    database: DatabaseMaster


class DatabaseMasterList(BaseModel):
    databases: list[DatabaseMaster]


class JarvisMessage(BaseModel):
    message: str


def visible(stmt, model, who: Principal, tenant: str | None):
    """`stmt` narrowed to the rows this caller may see (Admins without X-Tenant-ID see every tenant)."""
    if who.is_admin and tenant is None:
        return stmt
    return stmt.where(model.tenant_id == tenant)


async def load_master(session: AsyncSession, master_id: int, who: Principal, tenant: str | None,
                      key: str = "id") -> JarvisDatabaseMaster:
    stmt = visible(select(JarvisDatabaseMaster).where(JarvisDatabaseMaster.id == master_id),
                   JarvisDatabaseMaster, who, tenant)
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise not_found("database master", key, master_id)
    return found


def view(row: JarvisDatabaseMaster) -> DatabaseMaster:
    return DatabaseMaster.model_validate(row, from_attributes=True)


@router.get("", response_model=DatabaseMasterList)
async def list_masters(who: Principal = Depends(readers), tenant: str | None = Depends(tenant_filter),
                       session: AsyncSession = Depends(db_session)) -> DatabaseMasterList:
    stmt = visible(select(JarvisDatabaseMaster), JarvisDatabaseMaster, who, tenant).order_by(JarvisDatabaseMaster.id)
    return DatabaseMasterList(databases=[view(r) for r in (await session.execute(stmt)).scalars()])


@router.post("", response_model=DatabaseMasterSaved, status_code=201)
async def create_master(body: DatabaseMasterIn, who: Principal = Depends(writers),
                        tenant: str | None = Depends(tenant_filter),
                        session: AsyncSession = Depends(db_session)) -> DatabaseMasterSaved:
    row = JarvisDatabaseMaster(name=body.name, service_url=body.service_url, tenant_id=owning_tenant(who, tenant))
    session.add(row)
    await session.commit()
    return DatabaseMasterSaved(message="Database master created successfully", database=view(row))


@router.get("/{master_id}", response_model=DatabaseMasterOne)
async def get_master(master_id: ROW_ID, who: Principal = Depends(readers),
                     tenant: str | None = Depends(tenant_filter),
                     session: AsyncSession = Depends(db_session)) -> DatabaseMasterOne:
    return DatabaseMasterOne(database=view(await load_master(session, master_id, who, tenant)))


@router.put("/{master_id}", response_model=DatabaseMasterSaved)
async def update_master(master_id: ROW_ID, body: DatabaseMasterIn, who: Principal = Depends(writers),
                        tenant: str | None = Depends(tenant_filter),
                        session: AsyncSession = Depends(db_session)) -> DatabaseMasterSaved:
    row = await load_master(session, master_id, who, tenant)
    row.name, row.service_url = body.name, body.service_url
    await session.commit()
    await session.refresh(row)
    return DatabaseMasterSaved(message="Database master updated successfully", database=view(row))


@router.delete("/{master_id}", response_model=JarvisMessage)
async def delete_master(master_id: ROW_ID, who: Principal = Depends(writers),
                        tenant: str | None = Depends(tenant_filter),
                        session: AsyncSession = Depends(db_session)) -> JarvisMessage:
    row = await load_master(session, master_id, who, tenant)
    used = (await session.execute(select(func.count()).select_from(JarvisOperation)
                                  .where(JarvisOperation.source_id == row.id))).scalar_one()
    if used:
        raise conflict("DATABASE_MASTER_IN_USE", f"Database master is used by {used} operation(s); delete them first",
                       id=row.id, operations=used)
    await session.delete(row)
    await session.commit()
    return JarvisMessage(message="Database master deleted successfully")
