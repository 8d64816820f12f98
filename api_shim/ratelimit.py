"""Fixed-window rate limits kept in memory (per server process; with --workers N each worker counts alone).

Every response carries X-RateLimit-Limit / -Remaining / -Reset for the caller's overall budget; a call
over budget gets 429 with Retry-After. Routes with a stricter documented limit add `limited(...)`.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time

from fastapi import Depends, Request, Response

from api_shim.auth import Principal, principal
from api_shim.errors import ApiError, render
from api_shim.settings import get_settings


class Window:
    """Counts calls per key in fixed windows of `seconds`."""

    def __init__(self, limit: int, seconds: float):
        self.limit, self.seconds = limit, seconds
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> tuple[bool, int, float]:
        """Count one call; returns (allowed, remaining, seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            start, count = self._counts.get(key, (now, 0))
            if now - start >= self.seconds:
                start, count = now, 0
            count += 1
            self._counts[key] = (start, count)
            if len(self._counts) > 50_000:
                self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.seconds}
        return count <= self.limit, max(0, self.limit - count), self.seconds - (now - start)


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset))}


def exceeded(limit: int, reset: float, scope: str) -> ApiError:
    return ApiError(429, "RATE_LIMIT_EXCEEDED", "Too many requests",
                    {"limit": limit, "scope": scope, "retry_after_seconds": math.ceil(reset)},
                    headers={**headers(limit, 0, reset), "Retry-After": str(math.ceil(reset))})


def _caller_key(request: Request) -> str:
    settings = get_settings()
    credential = request.headers.get("authorization") or request.headers.get(settings.api_key_header)
    if credential:
        return "c:" + hashlib.sha256(credential.encode()).hexdigest()[:24]
    return "ip:" + (request.client.host if request.client else "?")


def install(app) -> None:
    window = Window(get_settings().rate_limit_per_minute, 60)

    @app.middleware("http")
    async def overall_limit(request: Request, call_next):
        if request.url.path in ("/health", "/docs", "/redoc", "/openapi.json"):
            return await call_next(request)
        allowed, remaining, reset = window.hit(_caller_key(request))
        if not allowed:
            err = exceeded(window.limit, reset, "overall")
            return render(request, err.status, err.code, err.message, err.details, err.headers)
        response = await call_next(request)
        for name, value in headers(window.limit, remaining, reset).items():
            response.headers.setdefault(name, value)
        return response


def limited(limit: int, per_seconds: float, scope: str):
    """A dependency: at most `limit` calls per `per_seconds` per user for this route."""
    window = Window(limit, per_seconds)

    async def check(response: Response, who: Principal = Depends(principal)) -> None:
        allowed, remaining, reset = window.hit(who.username)
        if not allowed:
            raise exceeded(limit, reset, scope)
        response.headers.update(headers(limit, remaining, reset))
    return check
