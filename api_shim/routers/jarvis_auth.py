"""Jarvis operations: /api/auth/register, /api/auth/login, /api/auth/me.

Registration is open, as the contract says. A registered user gets the role User in the tenant named by
MA_REGISTRATION_TENANT (default "jarvis", created on first use): the Jarvis service registry and
operations are shared by its users, and kept apart from every other tenant. Admins create users in
other tenants or roles with POST /auth/users.
"""
from __future__ import annotations

import os

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import (EMAIL_PATTERN, PASSWORD_MAX, PASSWORD_MIN, USERNAME_PATTERN, UtcDatetime, access_token,
                               add_user, authenticate, ensure_tenant)
from api_shim.auth import Principal, principal
from api_shim.errors import JARVIS_ERROR_RESPONSES
from api_shim.routers.migration_assistant.identity import signed_in_user
from api_shim.store.db import db_session
from api_shim.store.models import User

router = APIRouter(prefix="/api/auth", tags=["jarvis: auth"], responses=JARVIS_ERROR_RESPONSES)


def registration_tenant() -> str:
    return os.environ.get("MA_REGISTRATION_TENANT", "jarvis")


class RegisterRequest(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    password: SecretStr = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=320)
    password: SecretStr = Field(min_length=1, max_length=PASSWORD_MAX)


class JarvisUserBrief(BaseModel):
    id: int
    username: str
    email: str | None = None


class JarvisUser(JarvisUserBrief):
    role: str
    tenant_id: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RegisterResponse(BaseModel):
    message: str
    user: JarvisUser


class LoginResponse(BaseModel):
    message: str
    access_token: str
    user: JarvisUserBrief


class MeResponse(BaseModel):
    user: JarvisUser


def _user(user: User) -> JarvisUser:
    return JarvisUser.model_validate(user, from_attributes=True)


@router.post("/register", response_model=RegisterResponse, status_code=201)
async def register(body: RegisterRequest, session: AsyncSession = Depends(db_session)) -> RegisterResponse:
    """A new User in the registration tenant; 409 when the username or email is taken."""
    tenant = await ensure_tenant(session, registration_tenant(), "Jarvis operations users")
    user = await add_user(session, username=body.username, password=body.password.get_secret_value(),
                          role="User", tenant_id=tenant.id, email=body.email)
    await session.commit()
    return RegisterResponse(message="User registered successfully", user=_user(user))


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginRequest, session: AsyncSession = Depends(db_session)) -> LoginResponse:
    user = await authenticate(session, body.username, body.password.get_secret_value())
    token, _, _ = access_token(user)
    return LoginResponse(message="Login successful", access_token=token,
                         user=JarvisUserBrief.model_validate(user, from_attributes=True))


@router.get("/me", response_model=MeResponse)
async def me(who: Principal = Depends(principal), session: AsyncSession = Depends(db_session)) -> MeResponse:
    return MeResponse(user=_user(await signed_in_user(session, who)))
