"""Password hashes (argon2id), signed tokens (JWT, HS256 or RS256) and API keys (shown once, stored hashed)."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api_shim.settings import Settings

_hasher = PasswordHasher()
API_KEY_PREFIX = "ma_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(settings: Settings, subject: str, claims: dict[str, Any] | None = None,
                minutes: int | None = None) -> tuple[str, dt.datetime]:
    """A signed access token for `subject`; returns it with its expiry."""
    now = dt.datetime.now(dt.timezone.utc)
    expires = now + dt.timedelta(minutes=minutes or settings.token_minutes)
    payload = {**(claims or {}), "sub": subject, "iat": now, "exp": expires, "jti": secrets.token_hex(8)}
    key = (settings.jwt_private_key.get_secret_value() if settings.jwt_algorithm == "RS256"
           else settings.jwt_secret.get_secret_value())
    return jwt.encode(payload, key, algorithm=settings.jwt_algorithm), expires


def read_token(settings: Settings, token: str) -> dict[str, Any] | None:
    """The token's claims, or None when it is malformed, forged or expired."""
    key = settings.jwt_public_key if settings.jwt_algorithm == "RS256" else settings.jwt_secret.get_secret_value()
    try:
        return jwt.decode(token, key, algorithms=[settings.jwt_algorithm], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys are random and long, so a plain SHA-256 is enough to store them safely and look them up."""
    return hashlib.sha256(key.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
