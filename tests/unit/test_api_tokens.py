"""Personal API tokens: made (shown once, stored hashed), listed, revoked, expiring,
dead with a blocked account; over HTTP and from the CLI."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import ApiToken
from baadal.db.session import session_scope
from baadal.services import users
from baadal.services.policy import SYSTEM
from baadal.timeutil import utcnow
from tests.unit.test_api_routes import (  # noqa: F401 (api_world: the fixture)
    Api,
    api_world,
    assert_problem,
    refused_unchanged,
)
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401

pytestmark = pytest.mark.unit


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _me(api: Api, token: str) -> int:
    return api.client.get("/api/v1/me", headers=_bearer(token)).status_code


def test_make_list_use_and_revoke_a_token(api: Api) -> None:
    made = api.call("POST", "/tokens", "stu", json={"name": "ci", "expires_days": 7})
    assert made.status_code == 201, made.text
    body = made.json()
    token = body["token"]
    assert body["username"] == "stu" and body["active"] and token.startswith(body["prefix"])
    with session_scope(api.engine) as s:
        row = s.get(ApiToken, body["id"])
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr([row.name, row.prefix, row.token_hash])
        assert row.expires is not None and row.expires - row.created == timedelta(days=7)
    assert _me(api, token) == 200
    listed = api.call("GET", "/tokens", "stu").json()["items"]
    assert [t["name"] for t in listed][-1] == "ci" and "token" not in listed[-1]
    assert listed[-1]["last_used"] is not None
    revoked = api.call("POST", f"/tokens/{body['id']}/revoke", "stu")
    assert revoked.json()["active"] is False and revoked.json()["revoked"] is not None
    assert _me(api, token) == 401


def test_tokens_are_ones_own_admins_any(api: Api) -> None:
    theirs = api.call("POST", "/tokens", "eve", json={}).json()
    refused_unchanged(api, "POST", f"/tokens/{theirs['id']}/revoke", "stu")
    refused_unchanged(api, "GET", "/tokens", "oa", params={"username": "eve"})
    refused_unchanged(api, "POST", "/tokens", "fac", json={"username": "stu"})
    for_stu = api.call("POST", "/tokens", "admin", json={"username": "stu", "name": "by admin"})
    assert for_stu.status_code == 201 and for_stu.json()["username"] == "stu"
    assert api.call("POST", f"/tokens/{theirs['id']}/revoke", "admin").status_code == 200
    assert_problem(api.call("POST", "/tokens/999999/revoke", "admin"), 404)
    assert_problem(api.call("GET", "/tokens", "admin", params={"username": "nobody"}), 404)


@pytest.mark.parametrize(
    "body", [{"expires_days": 0}, {"expires_days": 10**6}, {"name": ""}, {"name": "a\nb"}]
)
def test_bad_token_input_is_422(api: Api, body: dict) -> None:
    before = api.state()
    assert_problem(api.call("POST", "/tokens", "stu", json=body), 422)
    assert api.state() == before


def test_an_expired_token_stops_working(api: Api) -> None:
    with session_scope(api.engine) as s:
        s.execute(update(ApiToken).values(expires=utcnow() - timedelta(seconds=1)))
    assert_problem(api.call("GET", "/me", "stu"), 401, "expired")


def test_a_blocked_accounts_token_stops_working(api: Api) -> None:
    assert _me(api, api.tokens["stu"]) == 200
    with session_scope(api.engine) as s:
        users.set_blocked(s, SYSTEM, "stu", True)
    assert_problem(api.call("GET", "/vms", "stu"), 403, "stu is blocked")


def test_tokens_from_the_cli(
    world_engine: tuple[Engine, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    engine, _root = world_engine
    monkeypatch.setenv("BAADAL_DATABASE__URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr("baadal.cli.door._acting_as", None)
    get_settings.cache_clear()
    runner = CliRunner()
    made = runner.invoke(
        app, ["--as", "stu", "token", "create", "--name", "ci", "--expires-days", "3"]
    )
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    with session_scope(engine) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listed = runner.invoke(app, ["--as", "stu", "token", "list"])
    assert (
        listed.exit_code == 0 and f"{row.prefix}..." in listed.output and token not in listed.output
    )
    other = runner.invoke(app, ["token", "create", "--user", "eve"])
    assert other.exit_code == 0 and "for eve" in other.output
    refused = runner.invoke(app, ["--as", "stu", "token", "create", "--user", "eve"])
    assert refused.exit_code == 2 and "stu may not" in refused.output
    nobody = runner.invoke(app, ["token", "create"])
    assert nobody.exit_code == 2 and "name a user" in nobody.output
    bad = runner.invoke(app, ["--as", "stu", "token", "create", "--expires-days", "0"])
    assert bad.exit_code == 2
    revoked = runner.invoke(app, ["--as", "stu", "token", "revoke", str(row.id)])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with session_scope(engine) as s:
        assert s.get(ApiToken, row.id).revoked is not None
    logged = "".join(p.read_text() for p in settings.log_dir.rglob("*") if p.is_file())
    assert token not in logged
