"""/auth/me, /auth/me/tenant, users and tenants (Admin scope), API keys (shown once, stored hashed)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import (EMAIL_PATTERN, PASSWORD_MAX, PASSWORD_MIN, TENANT_ID_PATTERN, USERNAME_PATTERN,
                               UtcDatetime, add_user, as_utc)
from api_shim.auth import (ALL_SCOPES, ROLES, Principal, principal, principals, require_scopes, scopes_for,
                           tenant_filter)
from api_shim.errors import ApiError, conflict, not_found
from api_shim.security import hash_api_key, new_api_key
from api_shim.store.db import db_session
from api_shim.store.models import ApiKey, Tenant, User, utcnow

router = APIRouter()
Role = Literal[tuple(ROLES)]  # type: ignore[valid-type]
Scope = Literal[tuple(ALL_SCOPES)]  # type: ignore[valid-type]
admin_only = require_scopes("admin")


class UserOut(BaseModel):
    id: int
    username: str
    email: str | None = None
    full_name: str | None = None
    role: str
    tenant_id: str | None = None
    scopes: list[str]
    is_active: bool
    created_at: UtcDatetime


class MeOut(BaseModel):
    username: str
    email: str | None = None
    full_name: str | None = None
    role: str
    tenant_id: str | None = None
    scopes: list[str] = Field(description="Scopes of the credential used for this call")
    auth_method: Literal["jwt", "api_key", "anonymous"]


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: SecretStr = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    email: str | None = Field(None, pattern=EMAIL_PATTERN, max_length=320)
    full_name: str | None = Field(None, max_length=200)
    role: Role = "User"
    tenant_id: str | None = Field(None, description="Required for every role but Admin")
    scopes: list[Scope] = Field(default_factory=list, description="Scopes beyond the role's")


class TenantOut(BaseModel):
    id: str
    name: str
    settings: dict[str, Any]
    limits: dict[str, Any]
    is_active: bool
    created_at: UtcDatetime


class TenantCreate(BaseModel):
    id: str = Field(pattern=TENANT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] | None = Field(None, description="At most the caller's scopes (default: all of them)")
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    scopes: list[str]
    tenant_id: str | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    last_used_at: UtcDatetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The API key; shown only in this response")


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, username=user.username, email=user.email, full_name=user.full_name, role=user.role,
                   tenant_id=user.tenant_id, scopes=sorted(scopes_for(user)), is_active=user.is_active,
                   created_at=user.created_at)


async def signed_in_user(session: AsyncSession, who: Principal) -> User:
    user = await session.get(User, who.user_id) if who.user_id is not None else None
    if user is None:
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "This call needs a signed-in user",
                       {"supported_methods": ["Bearer", "API-Key"], "auth_url": "/auth/token"})
    return user


@router.get("/me", response_model=MeOut)
async def me(who: Principal = Depends(principal), session: AsyncSession = Depends(db_session)) -> MeOut:
    """The caller, with the scopes of the credential used for this call."""
    user = await session.get(User, who.user_id) if who.user_id is not None else None
    return MeOut(username=who.username, email=user and user.email, full_name=user and user.full_name,
                 role=who.role, tenant_id=who.tenant_id, scopes=sorted(who.scopes), auth_method=who.via)


@router.get("/me/tenant", response_model=TenantOut)
async def my_tenant(tenant_id: str | None = Depends(tenant_filter),
                    session: AsyncSession = Depends(db_session)) -> Tenant:
    """The caller's tenant (Admins, who belong to none: the one named by X-Tenant-ID)."""
    tenant = await session.get(Tenant, tenant_id) if tenant_id else None
    if tenant is None:
        raise not_found("tenant", "tenant_id", tenant_id)
    return tenant


@router.post("/users", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, _: Principal = Depends(admin_only),
                      session: AsyncSession = Depends(db_session)) -> UserOut:
    user = await add_user(session, username=body.username, password=body.password.get_secret_value(),
                          role=body.role, tenant_id=body.tenant_id, email=body.email, full_name=body.full_name,
                          scopes=list(body.scopes))
    await session.commit()
    return user_out(user)


@router.get("/users", response_model=list[UserOut])
async def list_users(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000),
                     _: Principal = Depends(admin_only), tenant: str | None = Depends(tenant_filter),
                     session: AsyncSession = Depends(db_session)) -> list[UserOut]:
    """Every user (X-Tenant-ID narrows to one tenant)."""
    query = select(User).order_by(User.id).limit(limit).offset(offset)
    if tenant:
        query = query.where(User.tenant_id == tenant)
    return [user_out(u) for u in (await session.execute(query)).scalars()]


@router.get("/users/{username}", response_model=UserOut)
async def get_user(username: str, _: Principal = Depends(admin_only),
                   session: AsyncSession = Depends(db_session)) -> UserOut:
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if user is None:
        raise not_found("user", "username", username)
    return user_out(user)


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantCreate, _: Principal = Depends(admin_only),
                        session: AsyncSession = Depends(db_session)) -> Tenant:
    if await session.get(Tenant, body.id) is not None:
        raise conflict("TENANT_EXISTS", "A tenant with this id already exists", tenant_id=body.id)
    tenant = Tenant(id=body.id, name=body.name, settings=body.settings, limits=body.limits)
    session.add(tenant)
    await session.commit()
    return tenant


@router.get("/tenants", response_model=list[TenantOut])
async def list_tenants(_: Principal = Depends(admin_only), session: AsyncSession = Depends(db_session)) -> list:
    return list((await session.execute(select(Tenant).order_by(Tenant.id))).scalars())


@router.get("/tenants/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: str, who: Principal = Depends(principal),
                     session: AsyncSession = Depends(db_session)) -> Tenant:
    """Admins read any tenant; everyone else only their own (another tenant is not found)."""
    tenant = await session.get(Tenant, tenant_id) if who.can_see(tenant_id) else None
    if tenant is None:
        raise not_found("tenant", "tenant_id", tenant_id)
    return tenant


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
async def create_api_key(body: ApiKeyCreate, who: Principal = Depends(principal),
                         session: AsyncSession = Depends(db_session)) -> ApiKeyCreated:
    """A new API key with at most the caller's scopes; the key is in this response only."""
    beyond = [s for s in body.scopes or [] if s not in who.scopes]
    if beyond:
        raise ApiError(403, "INSUFFICIENT_PERMISSIONS", "An API key cannot have scopes its owner lacks",
                       {"required_scope": beyond[0], "current_scopes": sorted(who.scopes)})
    user = await signed_in_user(session, who)
    key = new_api_key()
    expires = utcnow() + dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row = ApiKey(key_hash=hash_api_key(key), prefix=key[:11], name=body.name, user_id=user.id,
                 tenant_id=who.tenant_id, scopes=sorted(body.scopes or who.scopes), expires_at=expires)
    session.add(row)
    await session.commit()
    return ApiKeyCreated(key=key, **ApiKeyOut.model_validate(row, from_attributes=True).model_dump())


@router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(who: Principal = Depends(principal), session: AsyncSession = Depends(db_session)) -> list:
    """The caller's keys that are not revoked or expired, without the keys themselves."""
    rows = (await session.execute(select(ApiKey).where(ApiKey.user_id == who.user_id, ApiKey.revoked_at.is_(None))
                                  .order_by(ApiKey.id))).scalars()
    now = utcnow()
    return [ApiKeyOut.model_validate(r, from_attributes=True) for r in rows
            if r.expires_at is None or as_utc(r.expires_at) > now]


@router.delete("/api-keys/{key}", status_code=204, response_class=Response)
async def revoke_api_key(key: str, who: Principal = Depends(principal),
                         session: AsyncSession = Depends(db_session)) -> Response:
    """Revoke one of the caller's keys (Admins: anyone's), named by the key itself or by its id."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    query = query.where(ApiKey.id == int(key)) if key.isdecimal() and len(key) < 18 else \
        query.where(ApiKey.key_hash == hash_api_key(key))
    if not who.is_admin:
        query = query.where(ApiKey.user_id == who.user_id)
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise not_found("api key", "key", row_label(key))
    row.revoked_at = utcnow()
    await session.commit()
    principals.forget()
    return Response(status_code=204)


def row_label(key: str) -> str:
    """What an error may say about a key: its id, or only its first characters."""
    return key if key.isdecimal() else key[:11] + "..."
