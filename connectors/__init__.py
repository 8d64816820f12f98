"""One module per engine behind one protocol (connectors.base.Connector)."""
from __future__ import annotations

import os
import sys

import pyarrow as pa

from connectors.base import Connector
from connectors.endpoint import Endpoint

ENGINES = ("postgres", "mysql", "sqlite", "clickhouse")

if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    # Arrow's default pool here, mimalloc, keeps the pages of freed batches; a copy frees batches
    # of about one size all the time, which the system allocator reuses as well: peak RSS of a
    # MySQL->PG bench run 276-281 MB with it, 282-301 MB with mimalloc, at the same speed
    pa.set_memory_pool(pa.system_memory_pool())


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
