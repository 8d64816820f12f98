"""OAuth2 authorization-code flow for registered clients.

An Admin registers a client (POST /auth/clients: the secret is shown once). The client sends the resource
owner to GET /auth/authorize; the owner signs in (HTTP Basic, a bearer token or API key, or the small HTML
form this endpoint shows) and is redirected to the client's redirect URI with a single-use code, which the
client exchanges at POST /auth/token (grant_type=authorization_code) with its secret.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import secrets
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import UtcDatetime, as_utc, authenticate, existing_tenant, invalid_field, split_scopes
from api_shim.auth import ALL_SCOPES, Principal, principal, require_scopes, scopes_for
from api_shim.errors import ApiError, not_found
from api_shim.security import hash_api_key, same_secret
from api_shim.settings import get_settings
from api_shim.store.db import db_session
from api_shim.store.models import OAuthClient, OAuthCode, User, utcnow

router = APIRouter()
CODE_LIFETIME = dt.timedelta(minutes=5)
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
Scope = Literal[tuple(ALL_SCOPES)]  # type: ignore[valid-type]


class ClientCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    redirect_uris: list[str] = Field(min_length=1, max_length=10,
                                     description="https URIs (http only on loopback), matched exactly")
    scopes: list[Scope] = Field(default_factory=list, description="Scopes the client may ask for (default: any)")
    tenant_id: str | None = Field(None, description="Only users of this tenant may authorize the client")

    @field_validator("redirect_uris")
    @classmethod
    def usable_redirects(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            parts = urlsplit(uri)
            secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)
            if not secure or not parts.hostname or parts.fragment or len(uri) > 2000:
                raise ValueError(f"{uri!r}: use an absolute https URI without fragment (http only on loopback)")
        return uris


class ClientOut(BaseModel):
    client_id: str
    name: str
    redirect_uris: list[str]
    scopes: list[str]
    tenant_id: str | None = None
    created_at: UtcDatetime


class ClientCreated(ClientOut):
    client_secret: str = Field(description="Shown only in this response")


class AuthorizeForm(BaseModel):
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256, json_schema_extra={"format": "password"})
    client_id: str = Field(max_length=64)
    response_type: Literal["code"] = "code"
    redirect_uri: str | None = Field(None, max_length=2000)
    state: str | None = Field(None, max_length=500)
    scope: str | None = Field(None, max_length=500)


@router.post("/clients", response_model=ClientCreated, status_code=201, tags=["oauth2"])
async def register_client(body: ClientCreate, _: Principal = Depends(require_scopes("admin")),
                          session: AsyncSession = Depends(db_session)) -> ClientCreated:
    if body.tenant_id:
        await existing_tenant(session, body.tenant_id)
    secret = secrets.token_urlsafe(32)
    client = OAuthClient(client_id="mac_" + secrets.token_urlsafe(12), secret_hash=hash_api_key(secret),
                         name=body.name, redirect_uris=body.redirect_uris, scopes=list(body.scopes),
                         tenant_id=body.tenant_id, created_at=utcnow())
    session.add(client)
    await session.commit()
    return ClientCreated(client_secret=secret, **ClientOut.model_validate(client, from_attributes=True).model_dump())


@router.get("/clients", response_model=list[ClientOut], tags=["oauth2"])
async def list_clients(_: Principal = Depends(require_scopes("admin")),
                       session: AsyncSession = Depends(db_session)) -> list:
    return list((await session.execute(select(OAuthClient).order_by(OAuthClient.created_at))).scalars())


@router.delete("/clients/{client_id}", status_code=204, response_class=Response, tags=["oauth2"])
async def delete_client(client_id: str, _: Principal = Depends(require_scopes("admin")),
                        session: AsyncSession = Depends(db_session)) -> Response:
    if await session.get(OAuthClient, client_id) is None:
        raise not_found("client", "client_id", client_id)
    await session.execute(delete(OAuthCode).where(OAuthCode.client_id == client_id))
    await session.execute(delete(OAuthClient).where(OAuthClient.client_id == client_id))
    await session.commit()
    return Response(status_code=204)


AUTHORIZE_RESPONSES = {
    302: {"description": "Signed in: redirect to the client's redirect URI with `code` and `state`"},
    303: {"description": "Form accepted: redirect to the client's redirect URI with `code` and `state`"},
    200: {"description": "No credentials: an HTML sign-in form",
          "content": {"text/html": {"schema": {"type": "string"}}}},
}


@router.get("/authorize", response_class=RedirectResponse, status_code=302, responses=AUTHORIZE_RESPONSES,
            tags=["oauth2"])
async def authorize(request: Request, client_id: str = Query(max_length=64),
                    response_type: Literal["code"] = Query("code"),
                    redirect_uri: str | None = Query(None, max_length=2000),
                    state: str | None = Query(None, max_length=500), scope: str | None = Query(None, max_length=500),
                    session: AsyncSession = Depends(db_session)) -> Response:
    """Sign the resource owner in (Basic, bearer token, API key or the form) and redirect with a code."""
    client, target = await _client_and_redirect(session, client_id, redirect_uri)
    owner = await _owner_from_headers(request, session)
    if owner is None:
        return HTMLResponse(_sign_in_form(client, redirect_uri, state, scope))
    code = await _issue_code(session, client, owner, target, split_scopes(scope))
    return RedirectResponse(_with_params(target, code=code, state=state), status_code=302)


@router.post("/authorize", status_code=303, response_class=RedirectResponse, responses=AUTHORIZE_RESPONSES,
             tags=["oauth2"])
async def authorize_form(form: Annotated[AuthorizeForm, Form()],
                         session: AsyncSession = Depends(db_session)) -> Response:
    """The sign-in form's answer: redirect with a code."""
    client, target = await _client_and_redirect(session, form.client_id, form.redirect_uri)
    owner = await authenticate(session, form.username, form.password)
    code = await _issue_code(session, client, owner, target, split_scopes(form.scope))
    return RedirectResponse(_with_params(target, code=code, state=form.state), status_code=303)


async def _client_and_redirect(session: AsyncSession, client_id: str,
                               redirect_uri: str | None) -> tuple[OAuthClient, str]:
    """The registered client and the redirect URI to use (never one it did not register)."""
    client = await session.get(OAuthClient, client_id)
    if client is None:
        raise invalid_field("client_id", "unknown client")
    if redirect_uri is None and len(client.redirect_uris) == 1:
        return client, client.redirect_uris[0]
    if redirect_uri not in client.redirect_uris:
        raise invalid_field("redirect_uri", "not registered for this client")
    return client, redirect_uri


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        name, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        name, sep, password = "", "", ""
    if not sep or not name:
        raise ApiError(401, "INVALID_CREDENTIALS", "Malformed Basic credentials", None,
                       headers={"WWW-Authenticate": "Basic"})
    return name, password


async def _owner_from_headers(request: Request, session: AsyncSession) -> User | None:
    """The user signed in by Basic credentials, a bearer token or an API key; None when there are none."""
    basic = _basic(request)
    if basic:
        return await authenticate(session, *basic)
    settings = get_settings()
    if not request.headers.get("authorization") and not request.headers.get(settings.api_key_header):
        return None
    who = await principal(request, session)
    return await session.get(User, who.user_id) if who.user_id is not None else None


async def _issue_code(session: AsyncSession, client: OAuthClient, owner: User, redirect_uri: str,
                      requested: list[str] | None) -> str:
    if client.tenant_id and owner.tenant_id != client.tenant_id and owner.role != "Admin":
        raise ApiError(403, "TENANT_ACCESS_DENIED", "This client is for another tenant's users",
                       {"client_id": client.client_id})
    wanted = [s for s in (requested or client.scopes) if not client.scopes or s in client.scopes]
    if (requested and not wanted) or (wanted and not scopes_for(owner, wanted)):
        raise invalid_field("scope", "none of the requested scopes is available to this user and client")
    code = secrets.token_urlsafe(32)
    session.add(OAuthCode(code_hash=hash_api_key(code), client_id=client.client_id, user_id=owner.id,
                          redirect_uri=redirect_uri, scopes=wanted, expires_at=utcnow() + CODE_LIFETIME))
    await session.commit()
    return code


def _with_params(uri: str, **params: str | None) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _sign_in_form(client: OAuthClient, redirect_uri: str | None, state: str | None, scope: str | None) -> str:
    hidden = {"client_id": client.client_id, "response_type": "code", "redirect_uri": redirect_uri,
              "state": state, "scope": scope}
    fields = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in hidden.items() if v)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Sign in</title></head><body>"
            f"<h1>Sign in to authorize {html.escape(client.name)}</h1>"
            f'<form method="post" action="/auth/authorize">{fields}'
            '<label>Username <input name="username" autocomplete="username" required></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
            '</label><button type="submit">Authorize</button></form></body></html>')


def _invalid_grant(field: str, message: str) -> ApiError:
    return ApiError(400, "INVALID_GRANT", message, {"field": field})


async def _authenticated_client(session: AsyncSession, request: Request, body: dict) -> OAuthClient:
    """The client named by HTTP Basic credentials or client_id/client_secret in the body, secret checked."""
    basic = _basic(request)
    client_id, secret = basic or (body.get("client_id"), body.get("client_secret"))
    client = await session.get(OAuthClient, client_id) if isinstance(client_id, str) and client_id else None
    if client is None or not isinstance(secret, str) or not same_secret(hash_api_key(secret), client.secret_hash):
        raise ApiError(401, "INVALID_CLIENT", "Client authentication failed", {"field": "client_secret"},
                       headers={"WWW-Authenticate": "Basic"})
    return client


async def redeem_code(session: AsyncSession, request: Request, body: dict) -> tuple[User, list[str] | None, str]:
    """Exchange an authorization code (single use, short-lived, bound to its client and redirect URI):
    (user, scopes, client_id)."""
    client = await _authenticated_client(session, request, body)
    code = body.get("code")
    row = await session.get(OAuthCode, hash_api_key(code)) if isinstance(code, str) and code else None
    if row is None or row.client_id != client.client_id or row.used or as_utc(row.expires_at) <= utcnow():
        raise _invalid_grant("code", "The authorization code is invalid, expired or already used")
    redirect = body.get("redirect_uri")
    if redirect != row.redirect_uri and not (redirect is None and client.redirect_uris == [row.redirect_uri]):
        raise _invalid_grant("redirect_uri", "redirect_uri does not match the authorization request")
    claimed = await session.execute(update(OAuthCode).where(OAuthCode.code_hash == row.code_hash,
                                                            OAuthCode.used.is_(False)).values(used=True))
    await session.commit()
    user = await session.get(User, row.user_id)
    if claimed.rowcount != 1 or user is None or not user.is_active:
        raise _invalid_grant("code", "The authorization code is invalid, expired or already used")
    return user, list(row.scopes) or None, client.client_id
