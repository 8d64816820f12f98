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
from starlette.datastructures import MutableHeaders

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


class OverallRateLimit:
    """ASGI middleware: every HTTP call counts against its caller's per-minute budget."""

    EXEMPT = ("/health", "/docs", "/redoc", "/openapi.json")

    def __init__(self, app, per_minute: int):
        self.app, self.window = app, Window(per_minute, 60)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            return await self.app(scope, receive, send)
        request = Request(scope)
        allowed, remaining, reset = self.window.hit(_caller_key(request))
        if not allowed:
            err = exceeded(self.window.limit, reset, "overall")
            response = render(request, err.status, err.code, err.message, err.details, err.headers)
            return await response(scope, receive, send)
        budget = headers(self.window.limit, remaining, reset)

        async def send_with_budget(message):
            if message["type"] == "http.response.start":
                sent = MutableHeaders(scope=message)
                for name, value in budget.items():
                    if name not in sent:  # a stricter route limit already said its own figures
                        sent[name] = value
            await send(message)
        await self.app(scope, receive, send_with_budget)


def limited(limit: int, per_seconds: float, scope: str):
    """A dependency: at most `limit` calls per `per_seconds` per user for this route."""
    window = Window(limit, per_seconds)

    async def check(response: Response, who: Principal = Depends(principal)) -> None:
        allowed, remaining, reset = window.hit(who.username)
        if not allowed:
            raise exceeded(limit, reset, scope)
        response.headers.update(headers(limit, remaining, reset))
    return check
