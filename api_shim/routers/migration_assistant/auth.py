"""/auth: tokens (password grant as a form or JSON, OAuth2 authorization-code grant), and the routes of
`identity` (the signed-in user and tenant, users, API keys, tenants) and `oauth` (clients, authorize)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import access_token, authenticate, invalid_field, split_scopes
from api_shim.errors import ApiError
from api_shim.routers.migration_assistant import identity, oauth
from api_shim.store.db import db_session
from api_shim.store.models import utcnow

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenRequest(BaseModel):
    """Form fields (or JSON keys) of POST /auth/token."""
    grant_type: Literal["password", "authorization_code"] = "password"
    username: str | None = Field(None, description="password grant")
    password: str | None = Field(None, description="password grant", json_schema_extra={"format": "password"})
    scope: str | None = Field(None, description="space-separated scopes to narrow the token to")
    code: str | None = Field(None, description="authorization_code grant")
    redirect_uri: str | None = Field(None, description="authorization_code grant: as sent to /auth/authorize")
    client_id: str | None = Field(None, description="authorization_code grant, unless sent as HTTP Basic")
    client_secret: str | None = Field(None, description="authorization_code grant, unless sent as HTTP Basic")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


_TOKEN_SCHEMA = TokenRequest.model_json_schema()
TOKEN_BODY = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": _TOKEN_SCHEMA}, "application/json": {"schema": _TOKEN_SCHEMA}}}}


async def _credentials(request: Request) -> dict:
    """The token request's fields, from an OAuth2 form or a JSON body."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise invalid_field("body", "expected a JSON object")
        return body
    return dict(await request.form())


def _require(body: dict, *fields: str) -> None:
    missing = [f for f in fields if not isinstance(body.get(f), str) or not body.get(f)]
    if missing:
        raise ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                       {"validation_errors": [{"field": f, "message": "Field required"} for f in missing]})


@router.post("/token", response_model=TokenResponse, openapi_extra=TOKEN_BODY)
async def token(request: Request, session: AsyncSession = Depends(db_session)) -> TokenResponse:
    """A bearer token for username and password (OAuth2 password grant, as a form or JSON), or for an
    authorization code issued by /auth/authorize (grant_type=authorization_code, client authenticated)."""
    body = await _credentials(request)
    grant = body.get("grant_type") or "password"
    if grant == "password":
        _require(body, "username", "password")
        user = await authenticate(session, body["username"], body["password"])
        access, expires, granted = access_token(user, split_scopes(body.get("scope")))
    elif grant == "authorization_code":
        _require(body, "code")
        user, scopes, client_id = await oauth.redeem_code(session, request, body)
        access, expires, granted = access_token(user, scopes, client_id=client_id)
    else:
        raise invalid_field("grant_type", "use password or authorization_code")
    return TokenResponse(access_token=access, expires_in=int((expires - utcnow()).total_seconds()),
                         scope=" ".join(sorted(granted)))


router.include_router(identity.router)
router.include_router(oauth.router)
