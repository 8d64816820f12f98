"""Jarvis operations contract: database-master registry, operations (each one a flow run of
`migrate-tables/on-demand`), and the universal migration service's /migrate and /test-connection."""
from fastapi import APIRouter

from api_shim.routers.jarvis import database_master, operations, service

router = APIRouter()
for area in (database_master.router, operations.router, service.router):
    router.include_router(area)
