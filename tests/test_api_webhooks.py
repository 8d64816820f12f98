"""POST /webhooks/ and GET /analytics/migrations against a real uvicorn, Prefect server + worker, PostgreSQL and
embedded ClickHouse: a tenant's webhook hears that tenant's runs only, signed; analytics count those runs."""
from __future__ import annotations

import datetime as dt
import json
import statistics

import pytest

from deployments.webhooks import verify_signature
from tests.test_api_migrations import (FINAL, ROWS, fill_postgres, other_tenant, prefect_run, system,  # noqa: F401
                                       user, wait_status)
from tests.test_api_presets import PASSWORD, overrides_for
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def webhooks():
    """(client, webhook) pairs to delete afterwards, whatever happens: a webhook left behind would fire for
    every later run of its tenant in the session."""
    made = []
    yield made
    for client, webhook in made:
        client.delete(f"/webhooks/{webhook['id']}")


@pytest.fixture
def receivers():
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        r.close()


def subscribe(client, url: str) -> dict:
    r = client.post("/webhooks/", json={
        "name": "Migration Notifications", "url": f"{url}/migration-webhook",
        "events": ["migration.completed", "migration.failed"],
        "headers": {"Authorization": "Bearer webhook-token", "Content-Type": "application/json"},
        "retry_policy": {"max_retries": 3, "retry_delay": 5}})
    assert r.status_code == 201, r.text
    return r.json()


def started_sessions(client, postgres_url: str, chdb_url: str) -> tuple[str, str]:
    """One session that completes (from a preset) and one that fails (a missing table), both started."""
    good = client.post("/presets/postgres-to-clickhouse/create-migration",
                       json={"overrides": overrides_for(postgres_url, chdb_url)})
    # into PostgreSQL: two runs at once cannot share one embedded ClickHouse folder (chDB locks it per process)
    bad = client.post("/migrations/", json={"name": "missing table", "source": system(postgres_url, PASSWORD),
                                            "destination": system(postgres_url), "tables": ["no_such_table"]})
    held = client.post("/migrations/", json={"name": "never started", "source": system(postgres_url),
                                             "destination": system(chdb_url)})
    assert {good.status_code, bad.status_code, held.status_code} == {201}, (good.text, bad.text)
    ids = good.json()["session_id"], bad.json()["session_id"]
    for session_id in ids:
        assert client.post(f"/migrations/{session_id}/start", json={}).status_code == 200
    return ids


def test_tenant_webhook_gets_signed_deliveries_and_analytics_count_the_runs(
        api_server, prefect_stack, user, other_tenant, receivers, webhooks, postgres_url, clickhouse_url):
    mine, theirs = receivers
    hook = subscribe(other_tenant, mine.url)
    foreign = subscribe(user, theirs.url)
    webhooks += [(other_tenant, hook), (user, foreign)]
    assert [w["id"] for w in other_tenant.get("/webhooks/").json()] == [hook["id"]]
    assert hook["id"] not in user.get("/webhooks/").text
    assert other_tenant.delete(f"/webhooks/{foreign['id']}").status_code == 404
    assert hook["events"] == ["migration.completed", "migration.failed"] and len(hook["secret"]) >= 16

    fill_postgres(postgres_url, "orders")
    good, bad = started_sessions(other_tenant, postgres_url, clickhouse_url)
    assert wait_status(other_tenant, good, FINAL, timeout=150)["status"] == "completed"
    assert wait_status(other_tenant, bad, FINAL, timeout=60)["status"] == "failed"

    deliveries = mine.wait_for(2, timeout=120)
    assert len(deliveries) == 2, f"{len(deliveries)} deliveries within 120 s"
    bodies = {}
    for d in deliveries:
        assert verify_signature(hook["secret"], d["body"], d["headers"]), d["headers"]
        assert d["path"] == "/migration-webhook" and d["headers"]["Authorization"] == "Bearer webhook-token"
        assert PASSWORD.encode() not in d["body"]
        body = json.loads(d["body"])
        bodies[body["flow_run_id"]] = body
    assert bodies[good]["event"] == "completed" and bodies[good]["summary"]["rows"] == ROWS
    assert bodies[bad]["event"] == "failed"
    assert theirs.requests == []  # the other tenant's webhook heard nothing of these runs

    check_analytics(other_tenant, prefect_stack, good, bad)
    for client, webhook in ((other_tenant, hook), (user, foreign)):
        assert client.delete(f"/webhooks/{webhook['id']}").status_code == 204
    assert other_tenant.get("/webhooks/").json() == []


def check_analytics(client, prefect_stack, good: str, bad: str) -> None:
    runs = [prefect_run(prefect_stack, i) for i in (good, bad)]
    durations = [(r.end_time - r.start_time).total_seconds() for r in runs]
    r = client.get("/analytics/migrations", params={"group_by": "day"})
    assert r.status_code == 200, r.text
    report = r.json()
    summary = report["summary"]
    assert (summary["total_migrations"], summary["successful_migrations"], summary["failed_migrations"]) == (2, 1, 1)
    assert summary["success_rate"] == 50.0 and summary["total_rows_transferred"] == ROWS
    assert summary["total_bytes_transferred"] > 0
    assert summary["average_duration_seconds"] == pytest.approx(statistics.fmean(durations), abs=0.01)
    assert report["by_type"] == {"postgresql": {"count": 2, "success_rate": 50.0}}
    started = runs[0].start_time.astimezone(dt.timezone.utc)
    today = dt.date(started.year, started.month, started.day)
    [trend] = report["performance_trends"]
    assert trend["date"] == today.isoformat() and trend["migrations"] == 2
    month = client.get("/analytics/migrations", params={"group_by": "month"})
    assert month.status_code == 200, month.text
    assert [t["date"] for t in month.json()["performance_trends"]] == [today.replace(day=1).isoformat()]
    later = client.get("/analytics/migrations", params={"start_date": (today + dt.timedelta(days=2)).isoformat(),
                                                        "end_date": (today + dt.timedelta(days=3)).isoformat()})
    assert later.status_code == 200 and later.json()["summary"]["total_migrations"] == 0
    backwards = client.get("/analytics/migrations", params={"start_date": "2026-02-01T00:00:00Z",
                                                            "end_date": "2026-01-01T00:00:00Z"})
    assert backwards.status_code == 400
