"""The universal migration service: POST /migrate (runs `migrate-tables` and waits for it) and
POST /test-connection (opens the endpoint with the engine's own connector)."""
from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from pydantic import BaseModel, Field

import connectors
from api_shim.auth import Principal, owning_tenant, require_scopes, tenant_filter
from api_shim.credentials import delete_endpoint, store_endpoint
from api_shim.errors import JARVIS_ERROR_RESPONSES, ApiError
from api_shim.jarvis_config import (DEPLOYMENT, WAIT_SECONDS, ConnectionSettings, JarvisConfig, JarvisResult,
                                    endpoint_for, engine_of, endpoints_for, flow_parameters, result_of)
from api_shim.prefect_runs import create_run, latest_artifact, prefect_client, tenant_tags, wait_for_final
from blocks.resolve import resolve_endpoint
from connectors.endpoint import Endpoint

router = APIRouter(tags=["jarvis: migration service"], responses=JARVIS_ERROR_RESPONSES)
runners = require_scopes("migrations:write")


class ConnectionTest(BaseModel):
    type: Literal["source", "destination"] = Field(description="which side the settings are for")
    adapter_type: str = Field(max_length=40, description="postgresql, mysql, clickhouse or sqlite")
    config: ConnectionSettings


class ConnectionTestResult(BaseModel):
    valid: bool
    type: Literal["source", "destination"]
    adapter_type: str
    error: str | None = None
    tables: list[str] | None = Field(None, description="tables found (when the connection works)")


def probe(endpoint: Endpoint, write: bool) -> tuple[list[str], str | None]:
    """Connect, check read (or write) access and list the tables; the error names no password."""
    try:
        conn = connectors.connect(endpoint)
        try:
            conn.check_access(write=write)
            return conn.list_tables(), None
        finally:
            conn.close()
    except Exception as exc:  # every failure is the answer, not a server error
        return [], endpoint.redact(str(exc)) or type(exc).__name__
    finally:
        connectors.release_embedded()  # chDB locks its folder per process: let flow runs open it


def probe_ref(ref: str, write: bool) -> str | None:
    """The error connecting to a stored endpoint (block reference), or None."""
    try:
        endpoint = resolve_endpoint(ref)
    except Exception as exc:
        return str(exc)
    return probe(endpoint, write)[1]


async def forget_credentials(client: PrefectClient, refs) -> None:
    for ref in refs:
        await delete_endpoint(client, ref)


async def result_of_run(client: PrefectClient, run: FlowRun, tables: list[str] | None) -> JarvisResult:
    """What a final run did: its `migration-report` artifact, or its error."""
    completed = run.state.is_completed()
    report = await latest_artifact(client, run.id, "migration-report") if completed else None
    error = None if completed else (run.state.message or f"the flow run ended {run.state.name}")
    return result_of(completed, report.data if report else None, error, str(run.id), tables)


async def run_and_wait(client: PrefectClient, config: JarvisConfig, refs: tuple[str, str], tags: list[str],
                       name: str) -> JarvisResult:
    """Run `migrate-tables` with these endpoints and wait until it ends; 504 if it outlasts the wait."""
    run = await create_run(client, DEPLOYMENT, flow_parameters(config, *refs), tags, name=name)
    run = await wait_for_final(client, run.id, WAIT_SECONDS)
    if not run.state.is_final():
        raise ApiError(504, "MIGRATION_TIMEOUT", f"The migration is still running after {WAIT_SECONDS:.0f} s",
                       {"flow_run_id": str(run.id)})
    return await result_of_run(client, run, config.tables)


@router.post("/migrate", response_model=JarvisResult,
             responses={504: {"model": JARVIS_ERROR_RESPONSES[400]["model"], "description": "Still running"}})
async def migrate(body: JarvisConfig, who: Principal = Depends(runners), tenant: str | None = Depends(tenant_filter),
                  client: PrefectClient = Depends(prefect_client)) -> JarvisResult:
    """Migrate now and answer when done (`success` false with `errors` when the migration failed)."""
    source, destination = endpoints_for(body)
    owner = owning_tenant(who, tenant)
    refs = (await store_endpoint(source, owner, "jarvis-migrate-source"),
            await store_endpoint(destination, owner, "jarvis-migrate-destination"))
    result = await run_and_wait(client, body, refs, tenant_tags(owner, who.username) + ["jarvis", "jarvis-migrate"],
                                name=f"jarvis-migrate-{body.source_type}-to-{body.dest_type}")
    await forget_credentials(client, refs)  # the run is over: its credentials are not needed any more
    return result


@router.post("/test-connection", response_model=ConnectionTestResult)
async def test_connection(body: ConnectionTest, who: Principal = Depends(runners)) -> ConnectionTestResult:
    """Connect with the engine's connector: a source must be readable, a destination writable."""
    engine_of(body.adapter_type, "adapter_type")
    endpoint = endpoint_for(body.config, body.adapter_type, body.type)
    tables, error = await asyncio.to_thread(probe, endpoint, body.type == "destination")
    return ConnectionTestResult(valid=error is None, type=body.type, adapter_type=body.adapter_type, error=error,
                                tables=None if error else tables)
