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
# keys of `Host=h;Port=5432;Database=app;Username=u;Password=p` connection strings (ADO.NET/Npgsql style)
_KV_KEYS = {
    "host": "host", "server": "host", "data source": "host", "port": "port", "database": "database",
    "initial catalog": "database", "db": "database", "username": "user", "user": "user", "user id": "user",
    "userid": "user", "uid": "user", "password": "password", "pwd": "password", "path": "path",
    "ssl mode": "ssl", "sslmode": "ssl", "secure": "ssl",
}


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

    @classmethod
    def from_connection_string(cls, text: str, engine: str | None = None, label: str = "") -> "Endpoint":
        """A URL, or `Host=h;Port=5432;Database=app;Username=u;Password=p` (keys case-insensitive;
        Server, User Id, Uid, Pwd, Initial Catalog also accepted). `engine` (PostgreSQL, MySQL, MariaDB,
        ClickHouse, any alias) is needed for the key=value form. Errors never quote the password."""
        text = (text or "").strip()
        if "://" in text:
            return cls.from_url(text, label=label)
        kind = ENGINE_ALIASES.get((engine or "").strip().lower())
        if kind is None:
            raise MigrationError(f"endpoint {label or 'connection string'}: unknown database type {engine!r}; "
                                 f"expected one of {', '.join(sorted(ENGINE_ALIASES))}")
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            name = _KV_KEYS.get(key.strip().lower())
            if not sep or name is None:
                raise MigrationError(f"endpoint {label or 'connection string'}: cannot read "
                                     f"{key.strip()!r}; expected Key=Value pairs such as Host=, Port=, Database=, "
                                     "Username=, Password=")
            values[name] = value.strip()
        if "host" not in values and "path" not in values:
            raise MigrationError(f"endpoint {label or 'connection string'}: Host= is missing")
        try:
            port = int(values["port"]) if values.get("port") else None
        except ValueError:
            raise MigrationError(f"endpoint {label or 'connection string'}: Port={values['port']!r} is not a number") from None
        secure = values.get("ssl", "").lower() in ("require", "true", "verify-full", "verify-ca", "1", "yes")
        return cls(engine=kind, host=values.get("host"), port=port, user=values.get("user"),
                   password=SecretStr(values.get("password", "")), database=values.get("database"),
                   path=values.get("path"), secure=secure, label=label)
