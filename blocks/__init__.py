"""Prefect blocks for endpoints. Register with `prefect block register -m blocks`.

PostgreSQL, MySQL/MariaDB and SQLite endpoints use prefect-sqlalchemy's
`SqlAlchemyConnector` with `ConnectionComponents` (the password is a SecretStr).
ClickHouse has its own block, `ClickHouseEndpoint`, for a server or an embedded chDB path.
"""
from blocks.clickhouse import ClickHouseEndpoint

__all__ = ["ClickHouseEndpoint"]
