"""Where a connector connects to. Built from a Prefect block, an environment variable or a URL."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import SecretStr

from connectors.base import MigrationError

ENGINE_ALIASES = {
    "postgresql": "postgres", "postgres": "postgres", "postgresql+psycopg": "postgres",
    "postgresql+psycopg2": "postgres", "mysql": "mysql", "mariadb": "mysql", "mysql+pymysql": "mysql",
    "sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "clickhouse": "clickhouse", "chdb": "clickhouse",
    "clickhouse+http": "clickhouse", "clickhouse+https": "clickhouse",
}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "clickhouse": 8123}


@dataclass
class Endpoint:
    engine: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    database: str | None = None
    path: str | None = None  # SQLite file or embedded chDB directory
    secure: bool = False
    label: str = ""  # how messages name this endpoint (block or variable name, never a secret)

    def __post_init__(self):
        if self.port is None and self.engine in DEFAULT_PORTS and self.path is None:
            self.port = DEFAULT_PORTS[self.engine]
        if not self.label:
            self.label = self.describe()

    def describe(self) -> str:
        if self.path:
            return f"{self.engine}:{self.path}"
        who = f"{self.user}@" if self.user else ""
        return f"{self.engine}://{who}{self.host}:{self.port}/{self.database or ''}"

    def secret(self) -> str:
        return self.password.get_secret_value()

    def redact(self, text: str) -> str:
        """`text` without the password, raw or URL-encoded."""
        secret = self.secret()
        if not secret:
            return text
        return text.replace(secret, "********").replace(quote(secret, safe=""), "********")

    @classmethod
    def from_url(cls, url: str, label: str = "") -> "Endpoint":
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        engine = ENGINE_ALIASES.get(scheme)
        if engine is None:
            raise MigrationError(
                f"endpoint {label or scheme!r}: unknown scheme {scheme!r}; "
                f"expected one of {', '.join(sorted(ENGINE_ALIASES))}")
        if scheme == "chdb":  # chdb:///abs/dir[?database=name], as clickhouse-connect spells it
            database = parse_qs(parts.query).get("database", [None])[0]
            return cls(engine=engine, path=unquote(parts.path), database=database, label=label)
        if engine == "sqlite":  # sqlite:///relative.db or sqlite:////abs.db, as SQLAlchemy spells it
            return cls(engine=engine, path=unquote(url.split(":///", 1)[1]) if ":///" in url else ":memory:", label=label)
        return cls(
            engine=engine, host=parts.hostname or "localhost", port=parts.port,
            user=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password) if parts.password else ""),
            database=parts.path.lstrip("/") or None, secure=scheme.endswith("https"), label=label,
        )
