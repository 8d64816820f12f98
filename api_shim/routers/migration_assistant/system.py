"""GET /, /health, /system/types, /system/modules."""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict:
    return {"status": "healthy", "version": "1.0.0", "service": "Migration Assistant API",
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
            "components": {"orchestrator": True, "preset_manager": True, "validation_engine": True}}
