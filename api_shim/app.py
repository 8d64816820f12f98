"""The FastAPI app serving the documented REST contracts on top of Prefect.

    uvicorn --factory api_shim.app:create_app       (or: migration-assistant serve)

Routers, one per area: Migration Assistant (system, auth, migrations, presets/templates/validation,
webhooks/analytics), Jarvis operations (/api/...), Schema Orchestrator (/api/v1/...).
"""
from __future__ import annotations

import contextlib
import gc
import re
import uuid

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prefect.client.orchestration import get_client
from starlette.datastructures import Headers, MutableHeaders

from api_shim import errors, ratelimit
from api_shim.bootstrap import seed
from api_shim.routers import jarvis, jarvis_auth, schema_auth, schema_orchestrator
from api_shim.routers.migration_assistant import auth, migrations, presets, system, webhooks
from api_shim.settings import get_settings
from api_shim.store.db import async_engine, sessionmaker_for, upgrade

VERSION = "1.0.0"
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
ROUTERS = [system.router, auth.router, migrations.router, presets.router, webhooks.router,
           jarvis.router, schema_orchestrator.router, jarvis_auth.router, schema_auth.router]


class RequestId:
    """ASGI middleware: each call gets a request id (the caller's X-Request-ID when it is sane), echoed back."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if SAFE_REQUEST_ID.fullmatch(given) else f"req-{uuid.uuid4().hex[:12]}"
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)
        await self.app(scope, receive, send_with_id)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    upgrade(settings.store_url)
    engine = async_engine(settings.store_url)
    app.state.sessions = sessionmaker_for(engine)
    await seed(app.state.sessions, settings)
    async with get_client() as client:
        app.state.prefect = client
        # Prefect and its imports leave about a million long-lived objects; without this every full
        # collection walks them all and stalls every request in flight for a few hundred milliseconds
        gc.collect()
        gc.freeze()
        yield
    await engine.dispose()


def create_app() -> FastAPI:
    settings = get_settings()  # refuses to start with unsafe settings
    app = FastAPI(title="Migration Assistant API", version=VERSION, lifespan=lifespan,
                  description="Table and schema migrations as Prefect flows, behind the documented REST contracts.",
                  responses=errors.ERROR_RESPONSES)
    app.state.settings = settings
    errors.install(app)
    # the last added runs first: request ids exist before the rate limit can refuse a call
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(ratelimit.OverallRateLimit, per_minute=settings.rate_limit_per_minute)
    app.add_middleware(RequestId)

    for router in ROUTERS:
        app.include_router(router)
    return app
