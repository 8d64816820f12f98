"""Accounts shared by the sign-in routes of every contract: checking a password, adding a user,
issuing the access token that `auth.principal` reads back.

Non-admin users always belong to a tenant: a non-admin without one would see every tenant's resources
(`tenant_filter` returns None, which means "all"), so `add_user` refuses that.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.auth import scopes_for
from api_shim.errors import ApiError, conflict
from api_shim.security import hash_password, issue_token, verify_password
from api_shim.settings import get_settings
from api_shim.store.models import Tenant, User, as_utc

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
PASSWORD_MIN, PASSWORD_MAX = 6, 256
_DUMMY_HASH = hash_password("not-a-real-password")  # keeps a failed look-up as slow as a wrong password


def invalid_field(field: str, message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                    {"validation_errors": [{"field": field, "message": message}]})


async def authenticate(session: AsyncSession, login: str, password: str,
                       code: str = "INVALID_CREDENTIALS") -> User:
    """The active user whose username (or unique email) and password match, or a 401 that does not say
    which part was wrong."""
    users = (await session.execute(select(User).where(or_(User.username == login, User.email == login))
                                   .limit(3))).scalars().all()
    user = next((u for u in users if u.username == login), users[0] if len(users) == 1 else None)
    if user is None:
        verify_password(password, _DUMMY_HASH)
    if user is None or not user.is_active or not verify_password(password, user.password_hash):
        raise ApiError(401, code, "Incorrect username or password", None, headers={"WWW-Authenticate": "Bearer"})
    return user


async def existing_tenant(session: AsyncSession, tenant_id: str, field: str = "tenant_id") -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise invalid_field(field, f"unknown tenant {tenant_id!r}")
    return tenant


async def ensure_tenant(session: AsyncSession, tenant_id: str, name: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        tenant = Tenant(id=tenant_id, name=name)
        session.add(tenant)
        await session.flush()
    return tenant


async def add_user(session: AsyncSession, *, username: str, password: str, role: str, tenant_id: str | None,
                   email: str | None = None, full_name: str | None = None, scopes: list[str] | None = None) -> User:
    """A new user (flushed, not committed); 409 when the username or email is taken."""
    if role != "Admin" and not tenant_id:
        raise invalid_field("tenant_id", f"required for role {role}")
    if tenant_id:
        await existing_tenant(session, tenant_id)
    names = {username, email} - {None}  # both sign a user in, so neither may match another's username or email
    taken = (await session.execute(select(User.username, User.email).where(
        or_(User.username.in_(names), User.email.in_(names))).limit(1))).first()
    if taken is not None:
        field = "username" if username in (taken.username, taken.email) else "email"
        raise conflict("USER_EXISTS", f"A user with this {field} already exists", field=field)
    user = User(username=username, password_hash=hash_password(password), role=role, tenant_id=tenant_id,
                email=email, full_name=full_name, scopes=sorted(set(scopes or [])))
    session.add(user)
    await session.flush()
    return user


def access_token(user: User, requested: list[str] | None = None,
                 **claims: str) -> tuple[str, dt.datetime, frozenset[str]]:
    """A signed token for `user` limited to `requested` scopes (all of the user's when None):
    (token, expiry, granted scopes)."""
    granted = scopes_for(user, requested)
    if requested and not granted:
        raise invalid_field("scope", f"none of the requested scopes is granted to {user.username}")
    token, expires = issue_token(get_settings(), user.username,
                                 {"role": user.role, "tenant": user.tenant_id, "scopes": sorted(granted), **claims})
    return token, expires, granted


UtcDatetime = Annotated[dt.datetime, AfterValidator(as_utc)]  # for response models of stored timestamps


def split_scopes(scope: object) -> list[str] | None:
    """OAuth2's space-separated scope string (a JSON list is accepted too); None when empty."""
    words = scope if isinstance(scope, list) else re.split(r"[\s,]+", scope if isinstance(scope, str) else "")
    return [str(s) for s in words if s] or None
