"""Imports every model module so that Base.metadata knows all tables (Alembic and tests use this)."""
from api_shim.store import models  # noqa: F401
from api_shim.store import jarvis_models  # noqa: F401
from api_shim.store import presets_models  # noqa: F401
from api_shim.store import schema_models  # noqa: F401
