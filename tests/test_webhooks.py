"""Webhook subscriptions: a YAML file becomes Prefect automations that POST signed JSON on run events.

Runs against the real server + process worker (`prefect_api`); the receiver is a local HTTP
listener on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
from pathlib import Path

import pytest
from prefect import get_client
from typer.testing import CliRunner

from connectors.base import Column, TableSchema
from deployments.webhooks import (DELIVERY_FLOW, WebhookConfigError, apply_webhooks, load_subscriptions,
                                  scrub_parameters, sign, verify_signature)
from migration_assistant.webhooks_cli import app as webhooks_app
from tests.helpers import create_table

ITEMS = TableSchema("items", (Column("id", "int64", False), Column("name", "string")), ("id",))
SECRET_VAR = "MA_TEST_WEBHOOK_SECRET"


class Receiver:
    """A loopback HTTP listener that records every request (headers and the raw body)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    break
            time.sleep(0.25)
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _write(path, text: str):
    path.write_text(text)
    return path


def _wait_final(run_ids, timeout=150):
    deadline, done = time.monotonic() + timeout, {}
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and len(done) < len(run_ids):
            for rid in run_ids:
                if rid not in done:
                    run = client.read_flow_run(rid)
                    if run.state and run.state.is_final():
                        done[rid] = run
            time.sleep(1)
    assert len(done) == len(run_ids), f"runs not final after {timeout} s: {set(run_ids) - set(done)}"
    return done


# ----------------------------------------------------------------------------- no server needed

def test_bad_subscription_files_are_rejected_with_every_problem_named(tmp_path):
    bad = _write(tmp_path / "bad.yaml", """
webhooks:
  - name: Ops Channel
    url: ftp://example.com/x
    events: [completed, exploded]
    secret: s3cr3t-inline-value
    colour: red
  - name: twin
    url: http://127.0.0.1:9/x
    events: [failed]
  - name: twin
    url: http://127.0.0.1:9/y
    events: [failed]
""")
    with pytest.raises(WebhookConfigError) as err:
        load_subscriptions(bad)
    text = str(err.value)
    for expected in ("not a valid name", "URL scheme", "unknown event 'exploded'", "env:VAR or secret/NAME",
                     "colour: unknown key"):
        assert expected in text, text
    assert "s3cr3t-inline-value" not in text  # the rejected secret is not echoed back
    with pytest.raises(WebhookConfigError, match="unique; repeated: twin"):
        load_subscriptions(_write(tmp_path / "twins.yaml", """
webhooks:
  - {name: twin, url: "http://127.0.0.1:9/x", events: [failed]}
  - {name: twin, url: "http://127.0.0.1:9/y", events: [failed]}
"""))
    with pytest.raises(WebhookConfigError, match="would loop"):
        load_subscriptions(_write(tmp_path / "loop.yaml", f"""
webhooks:
  - {{name: loop, url: "http://127.0.0.1:9/x", events: [completed], flows: [{DELIVERY_FLOW}]}}
"""))
    assert load_subscriptions(_write(tmp_path / "empty.yaml", "webhooks: []\n")).webhooks == []
    example = load_subscriptions(Path(__file__).resolve().parent.parent / "deployments" / "webhooks.example.yaml")
    assert [w.name for w in example.webhooks] == ["ops-channel", "data-team"]


def test_unresolvable_or_weak_secret_fails_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("MA_TEST_NO_SUCH_VAR", raising=False)
    monkeypatch.setenv("MA_TEST_SHORT_KEY", "short")
    subs = _write(tmp_path / "w.yaml", """
webhooks:
  - {name: a, url: "http://127.0.0.1:9/x", events: [failed], secret: "env:MA_TEST_NO_SUCH_VAR"}
  - {name: b, url: "http://127.0.0.1:9/x", events: [failed], secret: "env:MA_TEST_SHORT_KEY"}
""")
    with pytest.raises(WebhookConfigError) as err:
        apply_webhooks(subs)
    assert "nothing was changed" in str(err.value)
    assert "MA_TEST_NO_SUCH_VAR is not set" in str(err.value) and "at least 16 characters" in str(err.value)


def test_signature_helpers_and_parameter_scrubbing():
    body = json.dumps({"a": 1, "sent_at": 1_800_000_000}).encode()
    headers = {"X-Migration-Signature": sign("k" * 20, body), "X-Migration-Timestamp": "1800000000"}
    assert verify_signature("k" * 20, body, headers, now=1_800_000_010)
    assert not verify_signature("k" * 20, body + b" ", headers, now=1_800_000_010)
    assert not verify_signature("other-key-0000000", body, headers, now=1_800_000_010)
    assert not verify_signature("k" * 20, body, headers, now=1_800_001_000)  # stale
    params = {"source": "postgresql://u:pw@db/x", "db_password": "p", "api_token": "t", "nested": {"Secret": 1, "n": 2},
              "tables": ["a"]}
    assert scrub_parameters(params) == {"source": "postgresql://u:***@db/x", "nested": {"n": 2}, "tables": ["a"]}


# ----------------------------------------------------------------------------- real server + worker

def test_webhooks_fire_signed_once_per_event_and_apply_is_idempotent(prefect_api, receiver, sqlite_url, tmp_path,
                                                                   monkeypatch):
    started = time.monotonic()
    key = secrets.token_hex(24)
    monkeypatch.setenv(SECRET_VAR, key)
    subs = _write(tmp_path / "webhooks.yaml", f"""
webhooks:
  - name: ops-test
    url: {receiver.url}/hooks/migrations
    events: [completed, failed]
    secret: env:{SECRET_VAR}
    flows: [migrate-tables]
""")
    first = apply_webhooks(subs)
    assert "automation ma-webhook/ops-test" in first.created
    assert {"block webhook/ma-webhook-ops-test", "block secret/ma-webhook-ops-test"} <= set(first.created)
    again = apply_webhooks(subs)
    assert not again.changed, again.as_dict()
    assert again.automations == first.automations
    print(f"apply x2: {time.monotonic() - started:.1f} s")

    # nothing readable through the API shows the key
    with get_client(sync_client=True) as client:
        autos = client.request("POST", "/automations/filter", json={}).text
        blocks = client.request("POST", "/block_documents/filter", json={}).text
    assert "ma-webhook/ops-test" in autos and key not in autos and key not in blocks

    # one run that completes, one that fails (the table does not exist)
    create_table(sqlite_url, ITEMS, [{"id": i, "name": f"n{i}"} for i in range(1, 21)])
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("migrate-tables/on-demand")
        ok = client.create_flow_run_from_deployment(dep.id, parameters={
            "source": sqlite_url, "destination": f"sqlite:///{tmp_path / 'out.db'}", "tables": ["items"]})
        bad = client.create_flow_run_from_deployment(dep.id, parameters={
            "source": sqlite_url, "destination": f"sqlite:///{tmp_path / 'out2.db'}", "tables": ["no_such_table"]})
    runs = _wait_final([ok.id, bad.id])
    assert runs[ok.id].state.is_completed() and runs[bad.id].state.is_failed(), runs
    t_final = time.monotonic()
    got = receiver.wait_for(2, timeout=60)
    assert len(got) >= 2, f"{len(got)} webhook(s) arrived within 60 s of the runs finishing"
    print(f"both webhooks {time.monotonic() - t_final:.1f} s after both runs were final")
    time.sleep(5)  # no duplicates trickle in
    got = list(receiver.requests)
    assert len(got) == 2, [json.loads(r["body"]) for r in got]

    by_run = {}
    for req in got:
        h = {k.lower(): v for k, v in req["headers"].items()}
        expected = "sha256=" + hmac.new(key.encode(), req["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["x-migration-signature"], expected)
        assert verify_signature(key, req["body"], req["headers"])
        assert h["content-type"] == "application/json" and req["path"] == "/hooks/migrations"
        assert key.encode() not in req["body"] and key not in json.dumps(h)
        body = json.loads(req["body"])
        assert int(h["x-migration-timestamp"]) == body["sent_at"]
        by_run[body["flow_run_id"]] = body
    assert set(by_run) == {str(ok.id), str(bad.id)}

    done, failed = by_run[str(ok.id)], by_run[str(bad.id)]
    assert done["event"] == "completed" and done["state"]["name"] == "Completed" and done["state"]["type"] == "COMPLETED"
    assert done["flow_name"] == "migrate-tables" and done["deployment_name"] == "on-demand"
    assert done["parameters"]["tables"] == ["items"] and done["parameters"]["source"] == sqlite_url
    assert done["summary"]["rows"] == 20 and done["summary"]["verdict"] == "verified"
    assert [t["table"] for t in done["summary"]["tables"]] == ["items"]
    assert failed["event"] == "failed" and failed["state"]["type"] == "FAILED" and failed["summary"] is None
    assert "no_such_table" in (failed["state"]["message"] or "")

    # the delivery runs' logs and parameters do not carry the key either
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
        deliveries = [d for d in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[DELIVERY_FLOW])))
                      if (d.parameters or {}).get("subscription") == "ops-test"]  # not other tests' webhooks
        assert len(deliveries) == 2, [d.parameters for d in deliveries]
        deliveries = list(_wait_final([d.id for d in deliveries], timeout=30).values())
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[d.id for d in deliveries])))
    assert all(d.state.is_completed() for d in deliveries), [d.state for d in deliveries]
    text = json.dumps([d.parameters for d in deliveries]) + "\n".join(l.message for l in logs)
    assert "Delivered completed" in text and key not in text

    # a changed entry is updated in place; the CLI lists it
    _write(subs, subs.read_text().replace("[completed, failed]", "[completed, failed, crashed]"))
    changed = apply_webhooks(subs)
    assert changed.updated == ["automation ma-webhook/ops-test"] and not changed.created and not changed.deleted
    assert changed.automations == first.automations
    listed = CliRunner().invoke(webhooks_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    row = next(r for r in json.loads(listed.output) if r["name"] == "ma-webhook/ops-test")
    assert row["events"] == ["completed", "crashed", "failed"] and row["signed"] and row["flows"] == ["migrate-tables"]

    # removing the entry removes its automation and blocks, and nothing else
    _write(subs, "webhooks: []\n")
    applied = CliRunner().invoke(webhooks_app, ["apply", str(subs), "--json"])
    assert applied.exit_code == 0, applied.output
    assert sorted(json.loads(applied.output)["deleted"]) == [
        "automation ma-webhook/ops-test", "block secret/ma-webhook-ops-test", "block webhook/ma-webhook-ops-test"]
    with get_client(sync_client=True) as client:
        remaining = {str(a.id): a.name for a in client.read_automations()}
        assert first.automations["ma-webhook/ops-test"] not in remaining
        assert not [n for n in remaining.values() if n.startswith("ma-webhook/")]
        names = {d.name for d in client.read_block_documents()}
        assert not {n for n in names if n.startswith("ma-webhook-")}
        assert client.read_deployment_by_name("migrate-tables/on-demand")  # untouched
    print(f"webhook test: {time.monotonic() - started:.1f} s")
