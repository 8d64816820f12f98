"""One error type for every router, rendered in the envelope of the contract the path belongs to.

Migration Assistant (everything outside /api):
    {"error": {"code", "message", "details", "timestamp", "request_id"}}
Schema Orchestrator (/api/v1):
    {"error": {"code", "message", "details": [{"field", "message"}], "traceId", "timestamp"}}
Jarvis (/api/... and the migration service's /migrate, /test-connection):
    {"error": "<message>", "code", "details", "request_id"}
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("api_shim")

JARVIS_SERVICE_PATHS = ("/migrate", "/test-connection")
# the Schema Orchestrator documents one code per status
SCHEMA_ORCHESTRATOR_CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                             409: "CONFLICT", 429: "RATE_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def not_found(what: str, key: str, value: Any, code: str | None = None) -> ApiError:
    return ApiError(404, code or f"{what.upper().replace(' ', '_')}_NOT_FOUND", f"{what.capitalize()} not found",
                    {key: value})


def conflict(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(409, code, message, details)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    timestamp: str
    request_id: str | None = None
    traceId: str | None = None


class ErrorEnvelope(BaseModel):
    """The documented error shape (Jarvis paths return `error` as a plain message instead)."""
    error: ErrorBody


ERROR_RESPONSES = {status: {"model": ErrorEnvelope, "description": text} for status, text in {
    400: "Bad request: the body or parameters are invalid", 401: "Authentication required",
    403: "Insufficient permissions", 404: "Not found", 409: "Conflict with the current state",
    422: "Unprocessable", 429: "Rate limit exceeded"}.items()}


class JarvisError(BaseModel):
    """The error shape under /api/ (Jarvis) and on /migrate, /test-connection."""
    error: str
    code: str
    details: Any = None
    request_id: str | None = None


JARVIS_ERROR_RESPONSES = {status: {"model": JarvisError, "description": spec["description"]}
                          for status, spec in ERROR_RESPONSES.items()}


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = f"req-{uuid.uuid4().hex[:12]}"
    return rid


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def render(request: Request, status: int, code: str, message: str, details: Any = None,
           headers: dict | None = None) -> JSONResponse:
    rid = request_id(request)
    path = request.url.path
    if path.startswith("/api/v1"):
        code = SCHEMA_ORCHESTRATOR_CODES.get(status, code)
        if isinstance(details, dict) and details:
            details = [{"field": k, "message": str(v)} for k, v in details.items()]
        body = {"error": {"code": code, "message": message, "details": details or [], "traceId": rid,
                          "timestamp": _now()}}
    elif path.startswith("/api/") or path in JARVIS_SERVICE_PATHS:
        body = {"error": message, "code": code, "details": details, "request_id": rid}
    else:
        body = {"error": {"code": code, "message": message, "details": details, "timestamp": _now(),
                          "request_id": rid}}
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "X-Request-ID": rid})


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(map(str, loc))


_HTTP_CODES = {400: "BAD_REQUEST", 401: "AUTHENTICATION_REQUIRED", 403: "INSUFFICIENT_PERMISSIONS",
               404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 429: "RATE_LIMIT_EXCEEDED"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return render(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
                  for e in exc.errors()]
        if request.url.path.startswith("/api/v1"):
            return render(request, 400, "VALIDATION_ERROR", "Request validation failed",
                          {e["field"]: e["message"] for e in errors})
        return render(request, 400, "VALIDATION_ERROR", "Request validation failed",
                      {"validation_errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        return render(request, exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        error_id = f"err-{uuid.uuid4().hex[:12]}"
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
        return render(request, 500, "INTERNAL_ERROR", "An unexpected error occurred", {"error_id": error_id})
