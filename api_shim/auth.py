"""Who is calling: the Principal behind a bearer token or an API key, its roles, scopes and tenant.

Routers depend on `principal` (any caller), `require_scopes(...)`, `require_roles(...)` and
`tenant_filter` (the tenant whose resources a call may see: the caller's own, or for Admins the one named
by X-Tenant-ID, or all). A resource of another tenant is reported as not found, never as forbidden.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.errors import ApiError
from api_shim.security import hash_api_key, read_token
from api_shim.settings import Settings, get_settings
from api_shim.store.db import db_session
from api_shim.store.models import ApiKey, User, as_utc, utcnow

ALL_SCOPES = ["admin", "migrations:read", "migrations:write", "migrations:delete", "presets:read", "presets:write"]
ROLE_SCOPES = {
    "Admin": ALL_SCOPES,
    "User": ["migrations:read", "migrations:write", "presets:read"],
    "Developer": ["migrations:read", "migrations:write", "presets:read"],
    "DBA": ["migrations:read", "migrations:write", "migrations:delete", "presets:read"],
    "Viewer": ["migrations:read", "presets:read"],
}
ROLES = list(ROLE_SCOPES)


@dataclass(frozen=True)
class Principal:
    username: str
    user_id: int | None
    role: str
    tenant_id: str | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    via: str = "jwt"  # jwt | api_key | anonymous

    @property
    def is_admin(self) -> bool:
        return self.role == "Admin"

    def can_see(self, tenant_id: str | None) -> bool:
        return self.is_admin or tenant_id == self.tenant_id


def scopes_for(user: User, requested: list[str] | None = None) -> frozenset[str]:
    allowed = set(ROLE_SCOPES.get(user.role, [])) | set(user.scopes or [])
    return frozenset(allowed) if requested is None else frozenset(allowed & set(requested))


def principal_for(user: User, via: str, scopes: frozenset[str] | None = None) -> Principal:
    return Principal(user.username, user.id, user.role, user.tenant_id,
                     scopes if scopes is not None else scopes_for(user), via)


ANONYMOUS = Principal("anonymous", None, "Admin", None, frozenset(ALL_SCOPES), "anonymous")


def unauthenticated(message: str = "Authentication credentials required") -> ApiError:
    return ApiError(401, "AUTHENTICATION_REQUIRED", message,
                    {"supported_methods": ["Bearer", "API-Key"], "auth_url": "/auth/token"},
                    headers={"WWW-Authenticate": "Bearer"})


KEY_USE_RESOLUTION = dt.timedelta(minutes=1)  # last_used_at is written at most once a minute per key


async def _from_api_key(session: AsyncSession, key: str) -> Principal:
    row = (await session.execute(select(ApiKey, User).join(User, User.id == ApiKey.user_id)
                                 .where(ApiKey.key_hash == hash_api_key(key)))).first()
    now = utcnow()
    if row is None:
        raise unauthenticated("Invalid API key")
    api_key, user = row
    expires = as_utc(api_key.expires_at)
    if api_key.revoked_at is not None or (expires is not None and expires <= now) or not user.is_active:
        raise unauthenticated("API key revoked or expired")
    if api_key.last_used_at is None or now - as_utc(api_key.last_used_at) > KEY_USE_RESOLUTION:
        api_key.last_used_at = now
        await session.commit()
    scopes = scopes_for(user, api_key.scopes or None)
    return Principal(user.username, user.id, user.role, api_key.tenant_id or user.tenant_id, scopes, "api_key")


async def _from_token(session: AsyncSession, settings: Settings, token: str) -> Principal:
    claims = read_token(settings, token)
    if claims is None:
        raise unauthenticated("Invalid or expired token")
    user = (await session.execute(select(User).where(User.username == claims["sub"]))).scalar_one_or_none()
    if user is None or not user.is_active:
        raise unauthenticated("User no longer exists or is disabled")
    granted = claims.get("scopes")  # absent: every scope of the user's role; a list: at most those
    return principal_for(user, "jwt", scopes_for(user, granted if isinstance(granted, list) else None))


class PrincipalCache:
    """Who a credential stands for, remembered for a few seconds: a polling client then costs one token check
    and no store query per call. Revoking a key or changing a user calls `forget()`; other server processes
    notice within CACHE_SECONDS."""

    SECONDS = 5.0

    def __init__(self):
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, credential: str) -> Principal | None:
        entry = self._entries.get(_digest(credential))
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def put(self, credential: str, who: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[_digest(credential)] = (time.monotonic() + self.SECONDS, who)

    def forget(self) -> None:
        self._entries.clear()


def _digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


principals = PrincipalCache()


async def principal(request: Request, session: AsyncSession = Depends(db_session)) -> Principal:
    """The authenticated caller (an anonymous Admin when the server runs with authentication off)."""
    settings = get_settings()
    if hasattr(request.state, "principal"):
        return request.state.principal
    header = request.headers.get("authorization", "")
    key = request.headers.get(settings.api_key_header)
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
    found = principals.get(bearer or key) if (bearer or key) else None
    if found is not None and bearer and read_token(settings, bearer) is None:
        found = None  # expired since it was cached
    if found is None:
        found = await principal_from_credentials(session, bearer, key)
        if bearer or key:
            principals.put(bearer or key, found)
    request.state.principal = found
    return found


async def principal_from_credentials(session: AsyncSession, bearer: str | None, api_key: str | None) -> Principal:
    """The caller behind a bearer token or an API key, wherever they were given (headers, a WebSocket query)."""
    settings = get_settings()
    if bearer:
        return await _from_token(session, settings, bearer)
    if api_key:
        return await _from_api_key(session, api_key)
    if not settings.auth_enabled:
        return ANONYMOUS
    raise unauthenticated()


def require_scopes(*needed: str):
    async def check(who: Principal = Depends(principal)) -> Principal:
        missing = [s for s in needed if s not in who.scopes and "admin" not in who.scopes]
        if missing:
            raise ApiError(403, "INSUFFICIENT_PERMISSIONS", "Insufficient permissions for this operation",
                           {"required_scope": missing[0], "current_scopes": sorted(who.scopes)})
        return who
    return check


def require_roles(*roles: str):
    async def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in roles:
            raise ApiError(403, "FORBIDDEN", "Insufficient permissions for this operation",
                           {"required_role": " or ".join(roles), "current_role": who.role})
        return who
    return check


async def tenant_filter(request: Request, who: Principal = Depends(principal)) -> str | None:
    """The tenant a call works in: X-Tenant-ID for Admins (None means every tenant), else the caller's own.
    A non-admin naming another tenant is refused."""
    asked = request.headers.get("x-tenant-id")
    if who.is_admin:
        return asked or None
    if asked and asked != who.tenant_id:
        raise ApiError(403, "TENANT_ACCESS_DENIED", "You do not belong to this tenant", {"tenant_id": asked})
    return who.tenant_id


def owning_tenant(who: Principal, tenant: str | None) -> str | None:
    """The tenant a new resource belongs to."""
    return tenant if who.is_admin and tenant else who.tenant_id
