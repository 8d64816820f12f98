"""The flows run the way Prefect users run them: deployed from prefect.yaml, picked up by a worker."""
from __future__ import annotations

import datetime as dt
import json
import re
import time

import psycopg
import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.states import Cancelling, Scheduled

from connectors.base import Column, TableSchema
from tasks.state import LEDGER
from tests.helpers import assert_rows_equal, create_table, list_tables, read_rows

pytestmark = pytest.mark.usefixtures("prefect_api")
ITEMS = TableSchema("items", (Column("id", "int64", False), Column("name", "string"),
                              Column("price", "decimal", precision=10, scale=2)), ("id",))


def _client():
    return get_client(sync_client=True)


def _wait_final(run_id, timeout=180):
    deadline = time.monotonic() + timeout
    with _client() as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"flow run {run_id} not finished after {timeout} s; last state {run.state}")


def _pg_items(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2))")
        c.execute("INSERT INTO items SELECT g, 'item ' || g, g * 0.5 FROM generate_series(1, %s) g", [rows])


def test_every_flow_is_deployed_to_the_pool():
    with _client() as client:
        names = {(d.name, d.work_pool_name) for d in client.read_deployments()}
        flows = {f.id: f.name for f in client.read_flows()}
        full = {f"{flows[d.flow_id]}/{d.name}" for d in client.read_deployments()}
    assert {"migrate-tables/on-demand", "migrate-tables/nightly-incremental", "migrate-tables-dask/on-demand",
            "rollback-migration/on-demand"} <= full
    assert all(pool == "migrations" for _, pool in names)


def test_cli_deployment_run_copies_postgres_to_clickhouse(prefect_stack, postgres_url, tmp_path):
    _pg_items(postgres_url, 5000)
    destination = f"chdb://{tmp_path / 'warehouse'}"
    params = {"source": postgres_url, "destination": destination, "tables": ["items"], "chunk_rows": 2000}
    started = time.monotonic()
    done = prefect_stack.prefect("deployment", "run", "migrate-tables/on-demand", "--params", json.dumps(params))
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout).group(1)

    run = _wait_final(run_id)

    assert run.state.is_completed(), run.state
    total = time.monotonic() - started
    startup = (run.start_time - run.created).total_seconds()
    print(f"\n`prefect deployment run` to Completed: {total:.1f} s; created -> flow started (worker poll, "
          f"process start, imports): {startup:.1f} s; flow body: {run.total_run_time.total_seconds():.1f} s")
    assert_rows_equal(ITEMS, read_rows(postgres_url, ITEMS), read_rows(destination, ITEMS))


def test_nightly_deployment_has_runs_scheduled_at_two_utc():
    with _client() as client:
        dep = client.read_deployment_by_name("migrate-tables/nightly-incremental")
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline and not runs:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
            time.sleep(2)
    times = sorted(r.expected_start_time.astimezone(dt.timezone.utc) for r in runs if r.state.is_scheduled())
    assert times, "the scheduler created no runs for the cron deployment"
    assert all((t.hour, t.minute, t.second) == (2, 0, 0) for t in times)
    assert times[0] > dt.datetime.now(dt.timezone.utc)
    assert all(b - a == dt.timedelta(days=1) for a, b in zip(times, times[1:]))


def test_one_off_run_scheduled_ahead_starts_after_its_time(sqlite_url, tmp_path):
    create_table(sqlite_url, ITEMS, [{"id": i, "name": f"n{i}", "price": None} for i in range(1, 11)])
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=8)
    with _client() as client:
        dep = client.read_deployment_by_name("migrate-tables/on-demand")
        run = client.create_flow_run_from_deployment(
            dep.id, parameters={"source": sqlite_url, "destination": f"sqlite:///{tmp_path / 'out.db'}"},
            state=Scheduled(scheduled_time=when))
    run = _wait_final(run.id)
    assert run.state.is_completed(), run.state
    # Prefect's WaitForScheduledTime rule rounds the wait to whole seconds: a run may start up to 0.5 s early
    assert run.start_time >= when - dt.timedelta(seconds=0.5)


def test_cancelled_migration_leaves_destination_unchanged(postgres_db):
    source, destination = postgres_db(), postgres_db()
    _pg_items(source, 3_000_000)
    _pg_items(destination, 3)  # what the destination held before
    before = read_rows(destination, ITEMS)
    with _client() as client:
        dep = client.read_deployment_by_name("migrate-tables/on-demand")
        run = client.create_flow_run_from_deployment(
            dep.id, parameters={"source": source, "destination": destination, "tables": ["items"], "chunk_rows": 200_000})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # cancel once loading has begun
            if any("__stage_" in t for t in list_tables(destination)):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run never started loading")
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    run = _wait_final(run.id)
    assert run.state.is_cancelled(), run.state
    assert read_rows(destination, ITEMS) == before
    deadline = time.monotonic() + 30  # the on_cancellation hook drops the staging table
    while any("__stage_" in t for t in list_tables(destination)) and time.monotonic() < deadline:
        time.sleep(1)
    assert sorted(t for t in list_tables(destination) if t != LEDGER) == ["items"]


def test_two_workers_share_five_queued_runs_each_run_once(prefect_stack, sqlite_db, tmp_path):
    """Workers on another queue, each taking at most two runs at a time, so neither can take all five."""
    source = sqlite_db()
    create_table(source, ITEMS, [{"id": i, "name": f"n{i}", "price": None} for i in range(1, 101)])
    workers = [prefect_stack.start_worker(f"share-{i}", queue="shared", limit=2) for i in (1, 2)]
    try:
        with _client() as client:
            dep = client.read_deployment_by_name("migrate-tables/on-demand")
            runs = [client.create_flow_run_from_deployment(
                dep.id, work_queue_name="shared",
                parameters={"source": source, "destination": f"sqlite:///{tmp_path / f'out{i}.db'}"}) for i in range(5)]
        finished = [_wait_final(r.id, timeout=240) for r in runs]
    finally:
        for w in workers:
            prefect_stack.stop_worker(w)
    assert all(r.state.is_completed() for r in finished), [r.state for r in finished]
    assert all(r.run_count == 1 for r in finished)
    taken = {name: _runs_executed_by(prefect_stack.home / f"worker-share-{name}.log", runs) for name in (1, 2)}
    assert sorted(taken[1] + taken[2]) == sorted(str(r.id) for r in runs), taken  # each run exactly once
    assert taken[1] and taken[2], f"one worker ran everything: {taken}"
    for i in range(5):
        assert len(read_rows(f"sqlite:///{tmp_path / f'out{i}.db'}", ITEMS)) == 100


def _runs_executed_by(log, runs) -> list[str]:
    """Runs whose flow process this worker started (a worker that lost the race logs 'Aborted submission')."""
    text = log.read_text()
    return [str(r.id) for r in runs if f"/runs/flow-run/{r.id}" in text]


def test_second_run_into_the_same_destination_waits_for_the_first(postgres_db):
    source, destination = postgres_db(), postgres_db()
    _pg_items(source, 400_000)
    with _client() as client:
        dep = client.read_deployment_by_name("migrate-tables/on-demand")
        runs = [client.create_flow_run_from_deployment(
            dep.id, parameters={"source": source, "destination": destination, "tables": ["items"],
                                "target_prefix": f"copy{i}_", "chunk_rows": 100_000}) for i in range(2)]
    finished = [_wait_final(r.id, timeout=240) for r in runs]
    assert all(r.state.is_completed() for r in finished), [r.state for r in finished]
    windows = sorted(_load_window(r.id) for r in runs)
    assert windows[0][1] <= windows[1][0], f"loads overlapped: {windows}"
    for i in range(2):
        assert read_rows(destination, ITEMS, f"copy{i}_items") == read_rows(source, ITEMS)


def _load_window(run_id):
    """From the first staging table created to the last table published, for one flow run."""
    from prefect.client.schemas.filters import FlowRunFilterId
    with _client() as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    stages = [t for t in tasks if t.name.startswith(("create-staging", "publish"))]
    return min(t.start_time for t in stages), max(t.end_time for t in stages)
