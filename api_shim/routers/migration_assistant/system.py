"""GET /, /health, /system/types, /system/modules."""
from __future__ import annotations

import datetime as dt
import importlib.util

from fastapi import APIRouter
from pydantic import BaseModel

import connectors
from api_shim.ma_config import DATABASE_SYSTEMS, DATABASE_TYPES, FILE_SYSTEMS, SYSTEM_TYPES, TRANSFER_METHODS

router = APIRouter(tags=["system"])
VERSION = "1.0.0"


class ApiInfo(BaseModel):
    name: str
    version: str
    description: str
    docs_url: str
    redoc_url: str
    health_url: str
    features: list[str]


class Health(BaseModel):
    status: str
    version: str
    service: str
    timestamp: dt.datetime
    components: dict[str, bool]


class SystemTypes(BaseModel):
    system_types: list[str]
    transfer_methods: list[str]
    database_types: list[str]


class ConnectorModule(BaseModel):
    engine: str
    module: str
    available: bool
    system_types: list[str]
    source: bool = True
    destination: bool = True


class SystemModules(BaseModel):
    database_connectors: list[ConnectorModule]
    platform_adapters: list[str]
    refused_system_types: list[str]
    transfer_methods: list[str]


@router.get("/", response_model=ApiInfo)
async def root() -> ApiInfo:
    return ApiInfo(
        name="Web & Database Migration Assistant API", version=VERSION,
        description="Table migrations between databases, run as Prefect flows with verification and rollback",
        docs_url="/docs", redoc_url="/redoc", health_url="/health",
        features=["Migrations run as Prefect flow runs", "Progress, logs and metrics from the run",
                  "WebSocket progress stream", "Row-count and checksum verification",
                  "Atomic publish with rollback", "Batch and scheduled migrations", "Multi-tenant access"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health(status="healthy", version=VERSION, service="Migration Assistant API",
                  timestamp=dt.datetime.now(dt.timezone.utc),
                  components={"orchestrator": True, "preset_manager": True, "validation_engine": True})


@router.get("/system/types", response_model=SystemTypes)
async def system_types() -> SystemTypes:
    return SystemTypes(system_types=SYSTEM_TYPES, transfer_methods=TRANSFER_METHODS, database_types=DATABASE_TYPES)


@router.get("/system/modules", response_model=SystemModules)
async def system_modules() -> SystemModules:
    """The engine connectors this server has (connectors/<engine>.py) and the system types each serves."""
    modules = [ConnectorModule(engine=engine, module=f"connectors.{engine}",
                               available=importlib.util.find_spec(f"connectors.{engine}") is not None,
                               system_types=[t for t, e in DATABASE_SYSTEMS.items() if e == engine])
               for engine in connectors.ENGINES]
    return SystemModules(database_connectors=modules, platform_adapters=[], refused_system_types=FILE_SYSTEMS,
                         transfer_methods=["direct_copy"])
