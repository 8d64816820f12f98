"""Alembic environment: runs on the connection `api_shim.store.db.upgrade` hands over."""
from alembic import context

from api_shim.store import all_models  # noqa: F401  (every model module registers on Base)
from api_shim.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
