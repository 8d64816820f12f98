"""Save endpoint blocks from a YAML file whose secrets come from environment variables.

    endpoints:
      source-db:                       # saved as sqlalchemy-connector/source-db
        url_env: SOURCE_DB_URL         # postgresql://user:password@host/db, read from the environment
      warehouse:                       # saved as clickhouse-endpoint/warehouse
        engine: clickhouse
        host: ch1.internal
        username: loader
        password_env: CH_PASSWORD
      local-dw:
        engine: clickhouse
        path: /var/lib/chdb/dw

Passwords are only ever read from the environment, never from the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from blocks.clickhouse import ClickHouseEndpoint
from connectors.base import MigrationError
from connectors.endpoint import ENGINE_ALIASES, Endpoint

_DRIVERS = {"postgres": "postgresql+psycopg", "mysql": "mysql+pymysql", "sqlite": "sqlite+pysqlite"}


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url_env: str | None = None
    engine: str | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password_env: str | None = None
    database: str | None = None
    path: str | None = None
    secure: bool = False

    def endpoint(self, name: str) -> Endpoint:
        if self.url_env:
            if self.url_env not in os.environ:
                raise MigrationError(f"endpoint {name!r}: environment variable {self.url_env} is not set")
            return Endpoint.from_url(os.environ[self.url_env], label=name)
        if not self.engine:
            raise MigrationError(f"endpoint {name!r}: give url_env, or engine with host/path")
        password = ""
        if self.password_env:
            if self.password_env not in os.environ:
                raise MigrationError(f"endpoint {name!r}: environment variable {self.password_env} is not set")
            password = os.environ[self.password_env]
        engine = ENGINE_ALIASES.get(self.engine)
        if engine is None:
            raise MigrationError(f"endpoint {name!r}: unknown engine {self.engine!r}; one of {', '.join(sorted(ENGINE_ALIASES))}")
        return Endpoint(engine=engine,
                        host=self.host, port=self.port, user=self.username, password=SecretStr(password),
                        database=self.database, path=self.path, secure=self.secure, label=name)


def block_for(endpoint: Endpoint):
    """The Prefect block that holds `endpoint`, and its type slug."""
    if endpoint.engine == "clickhouse":
        return ClickHouseEndpoint(host=endpoint.host, port=endpoint.port or 8123, username=endpoint.user or "default",
                                  password=endpoint.password, database=endpoint.database or "default",
                                  secure=endpoint.secure, path=endpoint.path), "clickhouse-endpoint"
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector
    info = ConnectionComponents(driver=_DRIVERS[endpoint.engine], database=endpoint.path or endpoint.database,
                                host=endpoint.host, port=endpoint.port, username=endpoint.user,
                                password=endpoint.password if endpoint.secret() else None)
    return SqlAlchemyConnector(connection_info=info), "sqlalchemy-connector"


def save_endpoint_blocks(path: str | Path) -> list[str]:
    """Save every endpoint of the file as a block (overwriting); returns the references to use."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        specs = {name: EndpointSpec(**(spec or {})) for name, spec in (data.get("endpoints") or {}).items()}
    except (OSError, yaml.YAMLError) as exc:
        raise MigrationError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise MigrationError(f"{path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    if not specs:
        raise MigrationError(f"{path}: no endpoints: expected a mapping under 'endpoints:'")
    saved = []
    for name, spec in specs.items():
        block, slug = block_for(spec.endpoint(name))
        block.save(name, overwrite=True)
        saved.append(f"{slug}/{name}")
    return saved


def save_database_block(name: str, connection_string: str, engine: str | None = None) -> str:
    """Save a database given as a URL or `Host=..;Port=..;Database=..;Username=..;Password=..`
    (with `engine`: PostgreSQL, MySQL, MariaDB, ClickHouse) as a block; returns the reference
    (`sqlalchemy-connector/<name>` or `clickhouse-endpoint/<name>`) that flow parameters carry."""
    block, slug = block_for(Endpoint.from_connection_string(connection_string, engine, label=name))
    block.save(name, overwrite=True)
    return f"{slug}/{name}"
