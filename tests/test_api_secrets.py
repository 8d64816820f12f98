"""A password given to any of the three contracts appears nowhere afterwards: not in a response, the API's log,
the Prefect server's or worker's logs, nor anywhere the Prefect API shows (flow-run parameters and states,
run logs, artifacts, block documents, automations, variables)."""
from __future__ import annotations

import time
import uuid

import pymysql
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from connectors.endpoint import Endpoint


def _mysql_table(url: str) -> None:
    ep = Endpoint.from_url(url)
    with pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.secret(), database=ep.database,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(50))")
        cur.executemany("INSERT INTO accounts VALUES (%s, %s)", [(i, f"owner {i}") for i in range(1, 51)])


def _wait_session(client, session_id: str) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = client.get(f"/migrations/{session_id}/status").json()
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        time.sleep(1)
    raise AssertionError(f"session {session_id} did not finish: {status}")


def _prefect_texts(api_url: str) -> list[str]:
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        texts = [run.model_dump_json() for run in client.read_flow_runs(limit=200)]
        texts += [log.message for offset in range(0, 5000, 200) for log in client.read_logs(limit=200, offset=offset)]
        texts += [a.model_dump_json() for a in client.read_artifacts(limit=200)]
        texts += [b.model_dump_json() for b in client.read_block_documents(include_secrets=False)]
        texts += [a.model_dump_json() for a in client.read_automations()]
        texts += [v.model_dump_json() for v in client.read_variables()]
    return texts


def test_passwords_sent_to_every_contract_appear_nowhere(api_server, prefect_stack, mysql_user_with_password,
                                                         tmp_path):
    url, user, password = mysql_user_with_password
    _mysql_table(url)
    ep = Endpoint.from_url(url)
    wrong = f"Wrong-{uuid.uuid4().hex}"
    mysql = {"host": ep.host, "port": ep.port, "username": user, "password": password, "database": ep.database}
    chdb = {"type": "clickhouse", "path": str(tmp_path / "dw"), "database": "dw"}
    responses = []
    with api_server.admin() as admin:
        config = {"name": "secret check", "source": {"type": "mysql", **mysql}, "destination": chdb}
        responses.append(admin.post("/validate/", json=config))
        responses.append(admin.post("/validate/", json={**config, "source": {**config["source"], "password": wrong}}))
        created = admin.post("/migrations/", json=config)
        responses.append(created)
        session = created.json()["session_id"]
        responses.append(admin.post(f"/migrations/{session}/start", json={}))
        final = _wait_session(admin, session)
        assert final["status"] == "completed", final
        for path in ("status", "metrics", "logs?limit=200"):
            responses.append(admin.get(f"/migrations/{session}/{path}"))
        responses.append(admin.post("/test-connection", json={"type": "source", "adapter_type": "mysql",
                                                              "config": mysql}))
        responses.append(admin.post("/test-connection", json={"type": "source", "adapter_type": "mysql",
                                                              "config": {**mysql, "password": wrong}}))
        responses.append(admin.post("/migrate", json={
            "source_type": "mysql", "dest_type": "clickhouse", "source": mysql, "operation_type": "full",
            "destination": {"path": str(tmp_path / "dw2"), "database": "dw"}}))
        registered = admin.post("/api/v1/databases", json={
            "name": f"secret-check-{uuid.uuid4().hex[:6]}", "type": "MySQL", "environment": "Development",
            "masterConnectionString": f"Host={ep.host};Port={ep.port};Database={ep.database};"
                                      f"Username={user};Password={password}", "replicas": []})
        responses.append(registered)
        responses.append(admin.get(f"/api/v1/databases/{registered.json()['databaseId']}"))
    assert [r.status_code for r in responses][:4] == [200, 200, 201, 200]
    assert responses[-3].json()["success"] is True and registered.status_code == 201, responses[-3].text
    assert responses[1].json()["can_proceed"] is False  # the wrong password was really tried
    texts = [r.text + str(dict(r.headers)) for r in responses]
    texts.append(api_server.log.read_text())
    texts += [p.read_text(errors="replace") for p in prefect_stack.home.glob("*.log")]
    texts += _prefect_texts(prefect_stack.api_url)
    for secret in (password, wrong):
        leaks = [t[max(0, t.find(secret) - 200):t.find(secret) + 50] for t in texts if secret in t]
        assert not leaks, leaks[:3]
