"""Schema Orchestrator: POST /api/v1/authentication/login (username or email, and password).

Its roles Developer, DBA and Admin are ordinary user roles: Admins create such users with POST /auth/users.
"""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api_shim.accounts import PASSWORD_MAX, access_token, authenticate
from api_shim.store.db import db_session

router = APIRouter(prefix="/api/v1/authentication", tags=["schema orchestrator: auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=320, description="username or email")
    password: SecretStr = Field(min_length=1, max_length=PASSWORD_MAX)


class SignedInUser(BaseModel):
    username: str
    role: str


class LoginResponse(BaseModel):
    token: str
    expiresAt: dt.datetime
    user: SignedInUser


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginRequest, session: AsyncSession = Depends(db_session)) -> LoginResponse:
    user = await authenticate(session, body.username, body.password.get_secret_value(), code="UNAUTHORIZED")
    token, expires, _ = access_token(user)
    return LoginResponse(token=token, expiresAt=expires.replace(microsecond=0),
                         user=SignedInUser(username=user.username, role=user.role))
