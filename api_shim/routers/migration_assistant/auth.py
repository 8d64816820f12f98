"""/auth: tokens (password form or JSON), the signed-in user and tenant, users, API keys, tenants, OAuth2."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.auth import principal_for, scopes_for
from api_shim.errors import ApiError
from api_shim.security import issue_token, verify_password
from api_shim.settings import get_settings
from api_shim.store.db import db_session
from api_shim.store.models import User

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


async def authenticate(session: AsyncSession, username: str, password: str) -> User:
    """The active user with these credentials, or a 401 that does not say which part was wrong."""
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if user is None or not user.is_active or not verify_password(password, user.password_hash):
        raise ApiError(401, "INVALID_CREDENTIALS", "Incorrect username or password", None,
                       headers={"WWW-Authenticate": "Bearer"})
    return user


async def _credentials(request: Request) -> dict:
    """username/password/scope from an OAuth2 password form or a JSON body."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                           {"validation_errors": [{"field": "body", "message": "expected a JSON object"}]})
        return body
    return dict(await request.form())


@router.post("/token", response_model=TokenResponse)
async def token(request: Request, session: AsyncSession = Depends(db_session)) -> TokenResponse:
    """Exchange username and password for a bearer token (OAuth2 password grant, as a form or JSON)."""
    body = await _credentials(request)
    missing = [f for f in ("username", "password") if not isinstance(body.get(f), str) or not body.get(f)]
    if missing:
        raise ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                       {"validation_errors": [{"field": f, "message": "Field required"} for f in missing]})
    user = await authenticate(session, body["username"], body["password"])
    requested = str(body.get("scope") or "").split() or None
    who = principal_for(user, "jwt", scopes_for(user, requested))
    settings = get_settings()
    access, _ = issue_token(settings, user.username, {"role": user.role, "tenant": user.tenant_id,
                                                      "scopes": sorted(who.scopes)})
    return TokenResponse(access_token=access, expires_in=settings.token_minutes * 60, scope=" ".join(sorted(who.scopes)))
