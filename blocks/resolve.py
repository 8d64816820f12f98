"""Turn an endpoint reference from a flow parameter or YAML into an Endpoint.

A reference is one of:
  - a block document, "<block-type-slug>/<name>" (sqlalchemy-connector or clickhouse-endpoint);
  - "env:VAR", a URL held in an environment variable (may carry a password);
  - a URL without a password (sqlite:///file.db, chdb:///dir, postgresql://user@host/db).
Secrets never travel in the reference itself.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

from connectors.base import ConnectionFailed, MigrationError
from connectors.endpoint import Endpoint

_DRIVER_ENGINES = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}


def resolve_endpoint(ref: str) -> Endpoint:
    if not isinstance(ref, str) or not ref.strip():
        raise MigrationError("endpoint reference is empty: give a block name, env:VAR or a URL")
    ref = ref.strip()
    if ref.startswith("env:"):
        var = ref[4:]
        if var not in os.environ:
            raise MigrationError(f"endpoint {ref!r}: environment variable {var} is not set")
        return Endpoint.from_url(os.environ[var], label=ref)
    if "://" in ref:
        if urlsplit(ref).password:
            raise MigrationError("endpoint URL carries a password; put it in a block or an environment "
                                 "variable (env:VAR) so it never appears in parameters or logs")
        return Endpoint.from_url(ref, label=ref)
    return _from_block(ref)


def _from_block(ref: str) -> Endpoint:
    from prefect.blocks.core import Block
    if "/" not in ref:
        raise MigrationError(f"endpoint {ref!r}: expected '<block-type>/<name>' "
                             f"(e.g. sqlalchemy-connector/{ref} or clickhouse-endpoint/{ref}), env:VAR, or a URL")
    try:
        block = Block.load(ref)
    except (ValueError, Exception) as exc:  # Prefect raises ValueError for unknown names
        raise ConnectionFailed(f"endpoint {ref!r}: cannot load block: {exc}") from None
    if hasattr(block, "endpoint"):
        return block.endpoint(label=ref)
    info = getattr(block, "connection_info", None)
    if info is None:
        raise MigrationError(f"endpoint {ref!r}: block type {type(block).__name__} is not a database endpoint")
    if isinstance(info, str) or not hasattr(info, "driver"):
        return Endpoint.from_url(str(info), label=ref)
    driver = getattr(info.driver, "value", info.driver)
    engine = _DRIVER_ENGINES.get(driver.split("+")[0])
    if engine is None:
        raise MigrationError(f"endpoint {ref!r}: driver {driver!r} is not supported")
    if engine == "sqlite":
        return Endpoint(engine="sqlite", path=info.database, label=ref)
    return Endpoint(engine=engine, host=info.host, port=info.port, user=info.username,
                    password=info.password or Endpoint(engine).password, database=info.database, label=ref)
