"""Engine, sessions and schema upgrades for the shim's store (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

from alembic import command
from alembic.config import Config
from fastapi import Request
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
_SYNC = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}
_ASYNC = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def _driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"MA_STORE_URL: {backend!r} is not supported; use sqlite:///file.db or postgresql://...")
    return parsed.set(drivername=drivers[backend]).render_as_string(hide_password=False)


def upgrade(url: str) -> None:
    """Bring the store's schema to the newest revision of every branch (Alembic `upgrade heads`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(_driver(url, _SYNC))
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "heads")
    finally:
        engine.dispose()


def _alembic_config(connection) -> Config:
    """Alembic's settings for our migrations folder, running on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def async_engine(url: str) -> AsyncEngine:
    return create_async_engine(_driver(url, _ASYNC), pool_pre_ping=True)


def sessionmaker_for(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, committed by the handler that writes."""
    async with request.app.state.sessions() as session:
        yield session


def new_revision(message: str, branch: str, rev_id: str) -> None:
    """For developers: write a migration for model changes of `branch` (a contract's own tables).

        python -c "from api_shim.store.db import new_revision; new_revision('operations', 'jarvis', 'jarvis_0001')"

    The first revision of a new branch is generated against an empty database that has every other
    branch applied, so it holds only that branch's tables.
    """
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/gen.db"
        upgrade(url)
        engine = create_engine(_driver(url, _SYNC))
        with engine.begin() as connection:
            cfg = _alembic_config(connection)
            branch_heads = [h for h in _branch_heads(cfg) if h.startswith(branch)]
            command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id,
                             head=branch_heads[0] if branch_heads else "base",
                             branch_label=None if branch_heads else branch,
                             depends_on=None if branch_heads else "core_0001")
        engine.dispose()


def _branch_heads(cfg: Config) -> list[str]:
    from alembic.script import ScriptDirectory
    return list(ScriptDirectory.from_config(cfg).get_heads())
