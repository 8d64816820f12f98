"""One module per engine behind one protocol (connectors.base.Connector)."""
from __future__ import annotations

import sys

from connectors.base import Connector
from connectors.endpoint import Endpoint

ENGINES = ("postgres", "mysql", "sqlite", "clickhouse")


def connect(endpoint: Endpoint) -> Connector:
    """Open a connector for `endpoint`; raises ConnectionFailed naming the endpoint, not the password."""
    if endpoint.engine == "postgres":
        from connectors.postgres import PostgresConnector as cls
    elif endpoint.engine == "mysql":
        from connectors.mysql import MySQLConnector as cls
    elif endpoint.engine == "sqlite":
        from connectors.sqlite import SQLiteConnector as cls
    elif endpoint.engine == "clickhouse":
        from connectors.clickhouse import ClickHouseConnector as cls
    else:
        raise ValueError(f"unsupported engine {endpoint.engine!r}; supported: {', '.join(ENGINES)}")
    return cls(endpoint)


def release_embedded() -> None:
    """Close embedded ClickHouse engines (chDB locks its folder per process); nothing to do if none opened."""
    module = sys.modules.get("connectors.clickhouse")
    if module is not None:
        module.close_embedded()
