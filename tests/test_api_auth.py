"""Authentication and identity for the three contracts, against the real API server: tokens (form, JSON,
OAuth2 authorization code with requests_oauthlib), API keys, users, tenants, scopes, expiry, forgery,
Jarvis /api/auth and the Schema Orchestrator login. No password may show up in a response or the log."""
from __future__ import annotations

import datetime as dt
import html.parser
import secrets
import sqlite3
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import requests
from pydantic import SecretStr
from requests_oauthlib import OAuth2Session

from api_shim.routers.migration_assistant.oauth import CODE_LIFETIME
from api_shim.security import hash_api_key, issue_token
from api_shim.settings import Settings

PASSWORDS = {"admin123", "test123"}  # every password this module sends; none may come back
SEEN: list[str] = []  # every response body this module received


def _record(response: httpx.Response) -> None:
    response.read()
    SEEN.append(response.text)


def client(server, token: str | None = None, **headers: str) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return server.client(headers=headers, event_hooks={"response": [_record]})


def new_password() -> str:
    PASSWORDS.add(password := f"pw-{secrets.token_hex(8)}")
    return password


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def token_for(server, username: str, password: str, **form: str) -> str:
    with client(server) as c:
        r = c.post("/auth/token", data={"username": username, "password": password, **form})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def create_user(server, role: str, tenant: str | None = "tenant1") -> tuple[str, str]:
    username, password = unique(role.lower()), new_password()
    with client(server, token_for(server, "admin", "admin123")) as admin:
        r = admin.post("/auth/users", json={"username": username, "password": password, "role": role,
                                            "tenant_id": tenant, "email": f"{username}@example.com"})
    assert r.status_code == 201, r.text
    return username, password


def error_of(r: httpx.Response) -> dict:
    return r.json()["error"]


def test_documented_token_requests_as_json_and_form_then_me_by_bearer(api_server):
    with client(api_server) as c:
        as_json = c.post("/auth/token", json={"username": "testuser", "password": "test123"})
        as_form = c.post("/auth/token", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         content="username=admin&password=admin123")
        wrong = c.post("/auth/token", data={"username": "admin", "password": "not-it"})
        unknown_grant = c.post("/auth/token", data={"grant_type": "client_credentials"})
    assert as_json.status_code == 200 and as_form.status_code == 200
    body = as_json.json()
    assert body["token_type"] == "bearer" and 1700 <= body["expires_in"] <= 1800
    assert set(body["scope"].split()) == {"migrations:read", "migrations:write", "presets:read"}
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "INVALID_CREDENTIALS"
    assert unknown_grant.status_code == 400
    assert error_of(unknown_grant)["details"]["validation_errors"][0]["field"] == "grant_type"
    with client(api_server, body["access_token"]) as c:
        me = c.get("/auth/me").json()
    assert me["username"] == "testuser" and me["role"] == "User" and me["tenant_id"] == "tenant1"
    assert me["auth_method"] == "jwt" and "migrations:write" in me["scopes"]


def test_api_key_shown_once_listed_by_prefix_and_revoked(api_server):
    token = token_for(api_server, "testuser", "test123")
    with client(api_server, token) as user:
        made = [user.post("/auth/api-keys", json={"name": name}) for name in ("ci", "laptop")]
        listed = user.get("/auth/api-keys")
    assert [m.status_code for m in made] == [201, 201]
    first, second = (m.json() for m in made)
    assert first["key"].startswith(first["prefix"]) and len(first["key"]) > 40
    assert all("key" not in k for k in listed.json())
    assert {k["id"]: k["prefix"] for k in listed.json()}.items() >= {first["id"]: first["prefix"],
                                                               second["id"]: second["prefix"]}.items()
    assert first["key"] not in listed.text and second["key"] not in listed.text
    with client(api_server, **{"X-API-Key": first["key"], "Content-Type": "application/json"}) as by_key:
        assert by_key.get("/migrations/").status_code == 200
        me = by_key.get("/auth/me")
        assert me.status_code == 200
        assert me.json()["username"] == "testuser" and me.json()["auth_method"] == "api_key"
        with client(api_server, token) as user:
            assert user.delete(f"/auth/api-keys/{first['key']}").status_code == 204
            assert user.delete(f"/auth/api-keys/{second['id']}").status_code == 204
            again = user.delete(f"/auth/api-keys/{second['id']}")
            remaining = {k["id"] for k in user.get("/auth/api-keys").json()}
        revoked = by_key.get("/auth/me")
    assert revoked.status_code == 401 and error_of(revoked)["code"] == "AUTHENTICATION_REQUIRED"
    assert again.status_code == 404
    assert not remaining & {first["id"], second["id"]}
    with client(api_server, **{"X-API-Key": second["key"]}) as by_key:
        assert by_key.get("/auth/me").status_code == 401


def test_someone_elses_api_key_cannot_be_revoked(api_server):
    viewer, password = create_user(api_server, "Viewer")
    with client(api_server, token_for(api_server, "testuser", "test123")) as owner:
        key = owner.post("/auth/api-keys", json={"name": "mine"}).json()
    with client(api_server, token_for(api_server, viewer, password)) as other:
        by_id, by_key = other.delete(f"/auth/api-keys/{key['id']}"), other.delete(f"/auth/api-keys/{key['key']}")
    assert (by_id.status_code, by_key.status_code) == (404, 404)
    assert key["key"] not in by_key.text
    with client(api_server, **{"X-API-Key": key["key"]}) as still:
        assert still.get("/auth/me").status_code == 200


def test_scope_matrix(api_server):
    viewer, viewer_password = create_user(api_server, "Viewer")
    user_token = token_for(api_server, "testuser", "test123")
    viewer_token = token_for(api_server, viewer, viewer_password)
    narrowed_admin = token_for(api_server, "admin", "admin123", scope="migrations:read")
    with client(api_server, user_token) as user:
        listing = user.get("/auth/users")
        tenants = user.post("/auth/tenants", json={"id": unique("t"), "name": "x"})
    with client(api_server, viewer_token) as v:
        make_user = v.post("/auth/users", json={"username": unique("x"), "password": new_password(),
                                                "tenant_id": "tenant1"})
        write_key = v.post("/auth/api-keys", json={"name": "w", "scopes": ["migrations:write"]})
        read_key = v.post("/auth/api-keys", json={"name": "r", "scopes": ["migrations:read"]})
    with client(api_server, narrowed_admin) as a:
        narrowed = a.get("/auth/users")
    for refused, scope in ((listing, "admin"), (tenants, "admin"), (make_user, "admin"),
                           (write_key, "migrations:write"), (narrowed, "admin")):
        assert refused.status_code == 403, refused.text
        assert error_of(refused)["code"] == "INSUFFICIENT_PERMISSIONS"
        assert error_of(refused)["details"]["required_scope"] == scope
    assert error_of(write_key)["details"]["current_scopes"] == ["migrations:read", "presets:read"]
    assert read_key.status_code == 201 and read_key.json()["scopes"] == ["migrations:read"]
    with client(api_server, **{"X-API-Key": read_key.json()["key"]}) as by_key:
        assert by_key.get("/auth/me").json()["scopes"] == ["migrations:read"]


def test_admin_manages_users_of_every_contracts_roles(api_server):
    username, password = unique("dba"), new_password()
    with client(api_server, token_for(api_server, "admin", "admin123")) as admin:
        created = admin.post("/auth/users", json={"username": username, "password": password, "role": "DBA",
                                                  "tenant_id": "tenant1", "full_name": "Ada DBA"})
        fetched = admin.get(f"/auth/users/{username}")
        duplicate = admin.post("/auth/users", json={"username": username, "password": password,
                                                    "tenant_id": "tenant1"})
        no_tenant = admin.post("/auth/users", json={"username": unique("d"), "password": password,
                                                    "role": "Developer"})
        bad_tenant = admin.post("/auth/users", json={"username": unique("d"), "password": password,
                                                     "role": "Developer", "tenant_id": "no-such-tenant"})
        bad_role = admin.post("/auth/users", json={"username": unique("d"), "password": password,
                                                   "role": "Root", "tenant_id": "tenant1"})
        tenant1 = admin.get("/auth/users", headers={"X-Tenant-ID": "tenant1"})
        missing = admin.get("/auth/users/nobody-here")
    assert created.status_code == 201, created.text
    assert fetched.json()["role"] == "DBA" and fetched.json()["full_name"] == "Ada DBA"
    assert "migrations:delete" in fetched.json()["scopes"] and "admin" not in fetched.json()["scopes"]
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "USER_EXISTS"
    for bad, field in ((no_tenant, "tenant_id"), (bad_tenant, "tenant_id"), (bad_role, "role")):
        assert bad.status_code == 400, bad.text
        assert [e["field"] for e in error_of(bad)["details"]["validation_errors"]] == [field]
    assert {u["tenant_id"] for u in tenant1.json()} == {"tenant1"}
    assert {"testuser", username} <= {u["username"] for u in tenant1.json()}
    assert missing.status_code == 404 and error_of(missing)["code"] == "USER_NOT_FOUND"
    with client(api_server) as c:
        login = c.post("/api/v1/authentication/login", json={"username": username, "password": password})
    assert login.status_code == 200 and login.json()["user"] == {"username": username, "role": "DBA"}


def test_tenants_are_admin_managed_and_isolated(api_server):
    other = unique("other")
    with client(api_server, token_for(api_server, "admin", "admin123")) as admin:
        made = admin.post("/auth/tenants", json={"id": other, "name": "Other org", "limits": {"migrations": 5}})
        again = admin.post("/auth/tenants", json={"id": other, "name": "Other org"})
        listed = admin.get("/auth/tenants")
        read = admin.get(f"/auth/tenants/{other}")
        admin_has_none = admin.get("/auth/me/tenant")
        admin_narrowed = admin.get("/auth/me/tenant", headers={"X-Tenant-ID": other})
    assert made.status_code == 201 and made.json()["limits"] == {"migrations": 5}
    assert again.status_code == 409 and error_of(again)["code"] == "TENANT_EXISTS"
    assert {"tenant1", other} <= {t["id"] for t in listed.json()}
    assert read.status_code == 200 and read.json()["name"] == "Other org"
    assert admin_has_none.status_code == 404 and admin_narrowed.json()["id"] == other
    with client(api_server, token_for(api_server, "testuser", "test123")) as user:
        mine = user.get("/auth/me/tenant")
        own = user.get("/auth/tenants/tenant1")
        foreign = user.get(f"/auth/tenants/{other}")
        absent = user.get("/auth/tenants/no-such-tenant")
        listing = user.get("/auth/tenants")
    assert mine.status_code == 200 and mine.json()["id"] == "tenant1"
    assert own.json() == mine.json()
    assert foreign.status_code == 404 and absent.status_code == 404
    assert error_of(foreign)["code"] == error_of(absent)["code"] == "TENANT_NOT_FOUND"
    assert listing.status_code == 403


def _settings_of(server) -> Settings:
    return Settings(environment="development", auth_enabled=True, jwt_secret=SecretStr(server.jwt_secret))


def test_expired_and_forged_tokens_are_refused(api_server):
    settings = _settings_of(api_server)
    valid, _ = issue_token(settings, "testuser", {"role": "User"}, minutes=5)
    expired, _ = issue_token(settings, "testuser", {"role": "User"}, minutes=-1)
    claims = jwt.decode(valid, api_server.jwt_secret, algorithms=["HS256"])
    forged = jwt.encode(claims, "not-the-server-secret-at-all-" * 2, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    promoted = jwt.encode({**claims, "sub": "admin"}, "a-guessed-secret" * 2, algorithm="HS256")
    ghost, _ = issue_token(settings, "nobody-such", {"role": "Admin"}, minutes=5)
    with client(api_server) as c:
        answers = {name: c.get("/auth/me", headers={"Authorization": f"Bearer {t}"})
                   for name, t in [("valid", valid), ("expired", expired), ("forged", forged),
                                   ("unsigned", unsigned), ("promoted", promoted), ("ghost", ghost),
                                   ("garbage", "abc.def.ghi")]}
    assert answers.pop("valid").json()["username"] == "testuser"
    for name, r in answers.items():
        assert r.status_code == 401, name
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert error_of(r)["details"]["auth_url"] == "/auth/token"


def _form_fields(page: str) -> dict[str, str]:
    """The hidden inputs of the sign-in form, as a browser would submit them."""
    fields: dict[str, str] = {}

    class Inputs(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "input" and attrs.get("type") == "hidden":
                fields[attrs["name"]] = attrs["value"]
    Inputs().feed(page)
    return fields


def _register_client(server, redirect_uris: list[str]) -> dict:
    with client(server, token_for(server, "admin", "admin123")) as admin:
        r = admin.post("/auth/clients", json={"name": "Reporting app", "redirect_uris": redirect_uris})
        listed = admin.get("/auth/clients")
    assert r.status_code == 201, r.text
    assert r.json()["client_secret"] not in listed.text
    return r.json()


def _follow_no_redirects(response: requests.Response) -> requests.Response:
    SEEN.append(response.text)
    return response


def test_documented_oauth2_flow_with_requests_oauthlib(api_server, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    registered = _register_client(api_server, ["http://127.0.0.1:9/callback"])
    oauth = OAuth2Session(client_id=registered["client_id"])
    authorization_url, state = oauth.authorization_url(f"{api_server.url}/auth/authorize")

    # The resource owner opens the URL in a browser, gets the sign-in form and submits it.
    form_page = _follow_no_redirects(requests.get(authorization_url, allow_redirects=False))
    assert form_page.status_code == 200 and form_page.headers["content-type"].startswith("text/html")
    fields = {**_form_fields(form_page.text), "username": "testuser", "password": "test123"}
    assert fields["state"] == state
    signed_in = _follow_no_redirects(requests.post(f"{api_server.url}/auth/authorize", data=fields,
                                                   allow_redirects=False))
    assert signed_in.status_code == 303
    authorization_response = signed_in.headers["Location"]
    assert authorization_response.startswith("http://127.0.0.1:9/callback?")

    token = oauth.fetch_token(f"{api_server.url}/auth/token", authorization_response=authorization_response,
                              client_secret=registered["client_secret"])
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    response = _follow_no_redirects(requests.get(f"{api_server.url}/migrations/", headers=headers))
    assert response.status_code == 200 and isinstance(response.json(), list)
    me = _follow_no_redirects(requests.get(f"{api_server.url}/auth/me", headers=headers))
    assert me.json()["username"] == "testuser" and me.json()["tenant_id"] == "tenant1"

    code = parse_qs(urlsplit(authorization_response).query)["code"][0]
    with client(api_server) as c:
        reused = c.post("/auth/token", data={"grant_type": "authorization_code", "code": code},
                        auth=(registered["client_id"], registered["client_secret"]))
    assert reused.status_code == 400 and error_of(reused)["code"] == "INVALID_GRANT"


def _code_by_basic_auth(server, registered: dict, redirect_uri: str, **params: str) -> str:
    with client(server) as c:
        r = c.get("/auth/authorize", auth=("testuser", "test123"),
                  params={"response_type": "code", "client_id": registered["client_id"],
                          "redirect_uri": redirect_uri, "state": "s-1", **params})
    assert r.status_code == 302, r.text
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["state"] == ["s-1"]
    return query["code"][0]


def _age_code(server, code: str, by: dt.timedelta) -> None:
    """Move a code's expiry back in the server's own store (SQLite keeps UTC timestamps without zone)."""
    db = sqlite3.connect(server.log.parent / "api.db")
    with db:
        db.execute("UPDATE oauth_codes SET expires_at = datetime(expires_at, ?) WHERE code_hash = ?",
                   (f"-{int(by.total_seconds())} seconds", hash_api_key(code)))
    db.close()


def test_authorization_codes_are_bound_single_use_and_short_lived(api_server):
    uris = ["http://127.0.0.1:9/a", "https://app.example.com/b"]
    registered = _register_client(api_server, uris)
    basic = (registered["client_id"], registered["client_secret"])
    with client(api_server) as c:
        unregistered = c.get("/auth/authorize", auth=("testuser", "test123"),
                             params={"client_id": registered["client_id"], "redirect_uri": "https://evil.example/"})
        unknown = c.get("/auth/authorize", params={"client_id": "mac_nope", "redirect_uri": uris[0]})
        bad_owner = c.get("/auth/authorize", auth=("testuser", "wrong"),
                          params={"client_id": registered["client_id"], "redirect_uri": uris[0]})

        def exchange(code: str, redirect_uri: str, auth=basic) -> httpx.Response:
            return c.post("/auth/token", auth=auth, data={"grant_type": "authorization_code", "code": code,
                                                          "redirect_uri": redirect_uri})
        wrong_uri = exchange(_code_by_basic_auth(api_server, registered, uris[0]), uris[1])
        wrong_secret = exchange(_code_by_basic_auth(api_server, registered, uris[0]), uris[0],
                                (registered["client_id"], "not-the-secret"))
        stale_code = _code_by_basic_auth(api_server, registered, uris[1], scope="migrations:read")
        _age_code(api_server, stale_code, CODE_LIFETIME + dt.timedelta(seconds=1))
        expired = exchange(stale_code, uris[1])
        narrowed = exchange(_code_by_basic_auth(api_server, registered, uris[1], scope="migrations:read"), uris[1])
    assert unregistered.status_code == 400 and "evil" not in unregistered.headers.get("location", "")
    assert error_of(unregistered)["details"]["validation_errors"][0]["field"] == "redirect_uri"
    assert unknown.status_code == 400
    assert bad_owner.status_code == 401
    assert wrong_uri.status_code == 400 and error_of(wrong_uri)["details"] == {"field": "redirect_uri"}
    assert wrong_secret.status_code == 401 and error_of(wrong_secret)["code"] == "INVALID_CLIENT"
    assert expired.status_code == 400 and error_of(expired)["code"] == "INVALID_GRANT"
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "migrations:read"


def test_jarvis_register_login_me(api_server):
    username, password = unique("ops"), new_password()
    with client(api_server) as c:
        registered = c.post("/api/auth/register", json={"username": username, "email": f"{username}@example.com",
                                                        "password": password})
        duplicate = c.post("/api/auth/register", json={"username": username, "email": "x@example.com",
                                                       "password": password})
        taken_email = c.post("/api/auth/register", json={"username": "admin@example.com", "password": password,
                                                          "email": f"{unique('e')}@example.com"})
        short = c.post("/api/auth/register", json={"username": unique("s"), "email": "s@example.com",
                                                   "password": "abc"})
        login = c.post("/api/auth/login", json={"username": username, "password": password})
        refused = c.post("/api/auth/login", json={"username": username, "password": "wrong-one"})
        anonymous = c.get("/api/auth/me")
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["message"] == "User registered successfully"
    assert body["user"]["username"] == username and body["user"]["email"] == f"{username}@example.com"
    assert body["user"]["role"] == "User" and body["user"]["tenant_id"] == "jarvis"
    assert body["user"]["id"] > 0 and body["user"]["created_at"] and body["user"]["updated_at"]
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "USER_EXISTS"
    assert isinstance(duplicate.json()["error"], str)
    assert taken_email.status_code == 409 and taken_email.json()["details"] == {"field": "username"}
    assert short.status_code == 400
    assert [e["field"] for e in short.json()["details"]["validation_errors"]] == ["password"]
    assert login.status_code == 200 and login.json()["message"] == "Login successful"
    assert login.json()["user"] == {"id": body["user"]["id"], "username": username,
                                    "email": f"{username}@example.com"}
    assert refused.status_code == 401 and isinstance(refused.json()["error"], str)
    assert anonymous.status_code == 401 and isinstance(anonymous.json()["error"], str)
    with client(api_server, login.json()["access_token"]) as user:
        me = user.get("/api/auth/me")
        tenant = user.get("/auth/me/tenant")
    assert me.status_code == 200 and me.json()["user"]["username"] == username
    assert tenant.json()["id"] == "jarvis"


def test_schema_orchestrator_login_by_email(api_server):
    with client(api_server) as c:
        login = c.post("/api/v1/authentication/login", json={"username": "admin@example.com",
                                                              "password": "admin123"})
        refused = c.post("/api/v1/authentication/login", json={"username": "admin@example.com",
                                                                "password": "Admin123!"})
        incomplete = c.post("/api/v1/authentication/login", json={"username": "admin@example.com"})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["user"] == {"username": "admin", "role": "Admin"}
    expires = dt.datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=25) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(minutes=31)
    assert refused.status_code == 401 and error_of(refused)["code"] == "UNAUTHORIZED"
    assert error_of(refused)["traceId"] == refused.headers["X-Request-ID"]
    assert incomplete.status_code == 400
    assert [d["field"] for d in error_of(incomplete)["details"]] == ["password"]
    with client(api_server, body["token"]) as admin:
        assert admin.get("/auth/me").json()["role"] == "Admin"


def test_no_password_in_any_response_or_the_server_log(api_server):
    token_for(api_server, "testuser", "test123")
    assert len(SEEN) > 10
    leaked = [p for p in PASSWORDS for body in SEEN if p in body]
    assert not leaked
    log = api_server.log.read_text()
    assert not [p for p in PASSWORDS if p in log]
