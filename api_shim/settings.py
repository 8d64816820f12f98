"""Server settings, read once from the environment (the `serve` command sets them from its flags).

    MA_ENV                 development | production (default production)
    MA_AUTH_ENABLED        true | false (default false, as `migration-assistant serve` without --auth-enabled)
    MA_JWT_SECRET          HS256 signing secret (SECRET_KEY is accepted too, as older deployments name it)
    MA_JWT_ALGORITHM       HS256 (default) or RS256 (then MA_JWT_PRIVATE_KEY / MA_JWT_PUBLIC_KEY, PEM)
    ACCESS_TOKEN_EXPIRE_MINUTES  token lifetime (default 30)
    MA_STORE_URL           the shim's own SQL store (default sqlite:///.state/api.db; postgresql://... in production)
    MA_RATE_LIMIT          requests per minute per caller across the API (default 1200)
    API_KEY_HEADER_NAME    header carrying API keys (default X-API-Key)
"""
from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, SecretStr

DEFAULT_SECRET = "dev-secret-change-me"


class ConfigurationError(RuntimeError):
    """The server must not start with these settings."""


class Settings(BaseModel):
    environment: str = "production"
    auth_enabled: bool = False
    jwt_secret: SecretStr = SecretStr(DEFAULT_SECRET)
    jwt_algorithm: str = "HS256"
    jwt_private_key: SecretStr | None = None
    jwt_public_key: str | None = None
    token_minutes: int = 30
    store_url: str = "sqlite:///.state/api.db"
    rate_limit_per_minute: int = 1200
    api_key_header: str = "X-API-Key"

    @property
    def development(self) -> bool:
        return self.environment.lower() in {"dev", "development", "test"}

    def check(self) -> "Settings":
        if self.jwt_algorithm not in {"HS256", "RS256"}:
            raise ConfigurationError(f"MA_JWT_ALGORITHM={self.jwt_algorithm!r}: use HS256 or RS256")
        if self.jwt_algorithm == "RS256" and not (self.jwt_private_key and self.jwt_public_key):
            raise ConfigurationError("RS256 needs MA_JWT_PRIVATE_KEY and MA_JWT_PUBLIC_KEY (PEM)")
        weak = self.jwt_algorithm == "HS256" and (self.jwt_secret.get_secret_value() == DEFAULT_SECRET
                                                  or len(self.jwt_secret.get_secret_value()) < 16)
        if self.auth_enabled and weak and not self.development:
            raise ConfigurationError("authentication is enabled with the default or a short JWT secret: "
                                     "pass --jwt-secret (at least 16 characters) or set MA_ENV=development")
        return self


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


@lru_cache
def get_settings() -> Settings:
    env = os.environ
    secret = env.get("MA_JWT_SECRET") or env.get("SECRET_KEY") or DEFAULT_SECRET
    return Settings(
        environment=env.get("MA_ENV", "production"),
        auth_enabled=_flag("MA_AUTH_ENABLED", False),
        jwt_secret=SecretStr(secret),
        jwt_algorithm=env.get("MA_JWT_ALGORITHM", "HS256"),
        jwt_private_key=SecretStr(env["MA_JWT_PRIVATE_KEY"]) if env.get("MA_JWT_PRIVATE_KEY") else None,
        jwt_public_key=env.get("MA_JWT_PUBLIC_KEY"),
        token_minutes=int(env.get("ACCESS_TOKEN_EXPIRE_MINUTES", "30")),
        store_url=env.get("MA_STORE_URL", "sqlite:///.state/api.db"),
        rate_limit_per_minute=int(env.get("MA_RATE_LIMIT", "1200")),
        api_key_header=env.get("API_KEY_HEADER_NAME", "X-API-Key"),
    ).check()
