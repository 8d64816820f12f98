from __future__ import annotations

from pydantic import Field, SecretStr
from prefect.blocks.core import Block

from connectors.endpoint import Endpoint


class ClickHouseEndpoint(Block):
    """A ClickHouse server reached over HTTP(S), or an embedded chDB database in a local folder.

    Example:
        ```python
        from blocks import ClickHouseEndpoint
        ClickHouseEndpoint(host="ch.internal", username="loader", password="...", database="dw").save("warehouse")
        ClickHouseEndpoint(path="/var/lib/chdb/dw").save("local-dw")   # embedded, no server
        client = ClickHouseEndpoint.load("warehouse").get_client()
        ```
    """

    _block_type_name = "ClickHouse Endpoint"
    _block_type_slug = "clickhouse-endpoint"
    _description = "A ClickHouse server (HTTP) or an embedded chDB directory, as a migration endpoint."

    host: str | None = Field(default=None, description="Server host; leave empty for embedded chDB.")
    port: int = Field(default=8123, description="HTTP port (8443 with secure).")
    username: str = "default"
    password: SecretStr = Field(default=SecretStr(""))
    database: str = "default"
    secure: bool = False
    path: str | None = Field(default=None, description="Folder of an embedded chDB database.")

    def endpoint(self, label: str = "") -> Endpoint:
        if not self.host and not self.path:
            raise ValueError("ClickHouseEndpoint needs either host (a server) or path (embedded chDB)")
        return Endpoint(engine="clickhouse", host=self.host, port=self.port, user=self.username,
                        password=self.password, database=self.database, path=self.path,
                        secure=self.secure, label=label)

    def get_client(self):
        """A ready clickhouse-connect client."""
        import clickhouse_connect
        if self.path:
            return clickhouse_connect.get_client(dsn=f"chdb://{self.path}")
        return clickhouse_connect.get_client(host=self.host, port=self.port, username=self.username,
                                             password=self.password.get_secret_value(),
                                             database=self.database, secure=self.secure)
