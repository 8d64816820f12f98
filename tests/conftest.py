"""Real engines only: PostgreSQL and MariaDB servers, SQLite files, embedded ClickHouse (chDB).

Server URLs come from MA_TEST_POSTGRES_URL / MA_TEST_MYSQL_URL (defaults: the local servers).
Each test gets its own database on each server. Without a server, its tests skip loudly;
under CI (CI=true) a missing server fails instead.
"""
from __future__ import annotations

import os
import uuid

import psycopg
import pymysql
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

PG_URL = os.environ.get("MA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("MA_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
ENGINES = ("postgres", "mysql", "sqlite", "clickhouse")
PREFECT_SERVER = pytest.StashKey()


def _unavailable(what: str, exc: Exception):
    msg = f"{what} is not reachable ({exc}); start it (see DEVELOPERS.md) or set the URL variable"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def pytest_configure(config):
    """Start this test process's Prefect server now, so it comes up while tests are collected (not
    in an xdist controller, which runs no tests; not when PREFECT_API_URL names a server)."""
    runs_tests = hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)
    if runs_tests and not os.environ.get("PREFECT_API_URL"):
        from tests.prefect_server import launch_server
        config.stash[PREFECT_SERVER] = launch_server()


def pytest_unconfigure(config):
    server = config.stash.get(PREFECT_SERVER, None)
    if server is not None:
        from tests.prefect_server import discard_server
        discard_server(server)


@pytest.fixture(scope="session", autouse=True)
def prefect_backend(pytestconfig):
    """Flows called in tests report to this process's Prefect server (the deployment tests' too)."""
    server = pytestconfig.stash.get(PREFECT_SERVER, None)
    if server is None:
        yield
        return
    from tests.prefect_server import reporting_to
    with reporting_to(server):
        yield


@pytest.fixture
def postgres_db():
    """Factory: each call creates a fresh PostgreSQL database and returns its URL."""
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _unavailable("PostgreSQL", exc)
    names = []

    def make() -> str:
        names.append(f"ma_test_{uuid.uuid4().hex[:10]}")
        admin.execute(f'CREATE DATABASE "{names[-1]}"')
        return f"{PG_URL.rsplit('/', 1)[0]}/{names[-1]}"
    yield make
    for name in names:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def mysql_db():
    """Factory: each call creates a fresh MariaDB/MySQL database and returns its URL."""
    from connectors.endpoint import Endpoint
    ep = Endpoint.from_url(MYSQL_URL)
    try:
        admin = pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), autocommit=True,
                                connect_timeout=5)
    except pymysql.MySQLError as exc:
        _unavailable("MariaDB/MySQL", exc)
    names = []

    def make() -> str:
        names.append(f"ma_test_{uuid.uuid4().hex[:10]}")
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{names[-1]}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return f"{MYSQL_URL.rsplit('/', 1)[0]}/{names[-1]}"
    yield make
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture
def sqlite_db(tmp_path):
    counter = iter(range(1000))
    return lambda: f"sqlite:///{tmp_path / f'db{next(counter)}.sqlite'}"


@pytest.fixture
def clickhouse_db(tmp_path):
    """Embedded ClickHouse: one chDB folder per test, one database per call."""
    counter = iter(range(1000))
    return lambda: f"chdb://{tmp_path / 'chdb'}?database=db{next(counter)}"


@pytest.fixture
def postgres_url(postgres_db):
    return postgres_db()


@pytest.fixture
def mysql_url(mysql_db):
    return mysql_db()


@pytest.fixture
def sqlite_url(sqlite_db):
    return sqlite_db()


@pytest.fixture
def clickhouse_url(clickhouse_db):
    return clickhouse_db()


def make_endpoint(request, engine: str) -> str:
    """A fresh, empty endpoint URL of `engine` (a new database on each call)."""
    return request.getfixturevalue(f"{engine}_db")()


def engine_pairs():
    return [pytest.param(s, d, id=f"{s}-to-{d}") for s in ENGINES for d in ENGINES]


@pytest.fixture
def mysql_user_with_password(mysql_db):
    from connectors.endpoint import Endpoint
    url = mysql_db()
    ep = Endpoint.from_url(MYSQL_URL)
    user, password = f"ma_{uuid.uuid4().hex[:8]}", f"Right-{uuid.uuid4().hex}"
    admin = pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL ON `{url.rsplit('/', 1)[1]}`.* TO '{user}'@'%'")
    yield url, user, password
    with admin.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")


@pytest.fixture(scope="session")
def prefect_stack(pytestconfig, tmp_path_factory):
    """A real `prefect server start` plus a process worker, with prefect.yaml deployed."""
    from tests.prefect_server import start_stack
    stack, stop = start_stack(tmp_path_factory.mktemp("prefect-server"), pytestconfig.stash.get(PREFECT_SERVER, None))
    yield stack
    stop()


@pytest.fixture
def prefect_api(prefect_stack):
    """Point this test's Prefect client at the real server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}):
        yield prefect_stack


@pytest.fixture(scope="session")
def api_server(prefect_stack, tmp_path_factory):
    """The REST API (auth on, development users admin/admin123 and testuser/test123) on a real uvicorn."""
    from tests.api_server import start_api
    # a budget no test reaches: the rate limit has its own server in test_api_platform
    server, stop = start_api(prefect_stack.env, tmp_path_factory.mktemp("api"), {"MA_RATE_LIMIT": "1000000"})
    yield server
    stop()
