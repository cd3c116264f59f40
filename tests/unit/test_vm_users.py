"""A VM's users and its owner, in the authorization matrix's world: 'web' of organisation
A is owned by fac and shared with stu, col (organisation B) and blk (blocked)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import VM, User
from baadal.db.session import session_scope
from baadal.errors import ConflictError, NotFoundError, PermissionDenied
from baadal.services import vms
from baadal.services.policy import SYSTEM, actor_for
from tests.unit.test_authorization import (
    fingerprint,
    world_engine,  # noqa: F401 - a fixture
    world_template,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.unit


def _users(engine: Engine) -> dict[str, bool]:
    with Session(engine) as s:
        return {u.username: u.owner for u in vms.list_vm_users(s, SYSTEM, "web")}


def _sees_web(engine: Engine, who: str) -> bool:
    with Session(engine) as s:
        return any(vm.name == "web" for vm in vms.list_vms(s, actor_for(s, who)))


def test_the_owner_shares_a_vm_and_takes_it_back(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
) -> None:
    engine, _ = world_engine
    assert _users(engine) == {"fac": True, "stu": False, "col": False, "blk": False}
    assert not _sees_web(engine, "eve")
    with session_scope(engine) as s:
        vms.add_vm_user(s, actor_for(s, "fac"), "web", "eve")
    assert _sees_web(engine, "eve")
    with session_scope(engine) as s:  # a user of the VM operates it as its owner does
        vms.operate(s, actor_for(s, "eve"), "web", "stop")
    with session_scope(engine) as s:
        vms.remove_vm_user(s, actor_for(s, "oa"), "web", "eve")
    assert not _sees_web(engine, "eve")


@pytest.mark.parametrize(
    ("who", "username", "error", "message"),
    [
        ("fac", "stu", ConflictError, "stu is a user of VM web already"),
        ("fac", "fac", ConflictError, "fac is a user of VM web already"),
        ("admin", "nobody", NotFoundError, "no user named 'nobody'"),
        ("fac", "ob", PermissionDenied, "fac may not share VM web with ob, who is of another"),
        ("oa", "ob", PermissionDenied, "oa may not share"),
        ("stu", "eve", PermissionDenied, "stu may not add or remove a VM's users"),
        ("col", "eve", PermissionDenied, "col may not"),
    ],
)
def test_bad_additions_are_refused(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    who: str,
    username: str,
    error: type[Exception],
    message: str,
) -> None:
    engine, root = world_engine
    before = fingerprint(engine, root)
    with Session(engine) as s:
        with pytest.raises(error, match=message):
            vms.add_vm_user(s, actor_for(s, who), "web", username)
        s.commit()
    assert fingerprint(engine, root) == before


def test_blocked_and_pending_accounts_cannot_be_given_a_vm(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
) -> None:
    engine, _ = world_engine
    with session_scope(engine) as s:
        s.scalar(
            select(User).where(User.username == "eve")
        ).registration_key = C.RegistrationKey.PENDING
        s.add(User(username="gone", block_user=True))
    for username in ("eve", "gone"):
        with Session(engine) as s:
            with pytest.raises(ConflictError, match=f"{username} is blocked or not approved"):
                vms.add_vm_user(s, SYSTEM, "web", username)
            with pytest.raises(ConflictError, match="blocked or not approved"):
                vms.transfer_ownership(s, SYSTEM, "web", username)


def test_an_admin_shares_across_organisations(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
) -> None:
    engine, _ = world_engine
    with session_scope(engine) as s:
        vms.add_vm_user(s, actor_for(s, "admin"), "web", "ob")
    assert _users(engine)["ob"] is False


def test_the_owner_stays_and_removing_a_stranger_is_refused(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
) -> None:
    engine, _ = world_engine
    with Session(engine) as s:
        with pytest.raises(ConflictError, match="fac owns VM web: give it to another owner"):
            vms.remove_vm_user(s, SYSTEM, "web", "fac")
        with pytest.raises(NotFoundError, match="eve is not a user of VM web"):
            vms.remove_vm_user(s, SYSTEM, "web", "eve")


def test_ownership_moves_and_the_identity_stays(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
) -> None:
    engine, _ = world_engine
    with session_scope(engine) as s:
        vm = vms.transfer_ownership(s, SYSTEM, "web", "eve")
        assert vm.vm_identity == "ORG_A_fac_web"
    assert _users(engine) == {"eve": True, "fac": False, "stu": False, "col": False, "blk": False}
    with Session(engine) as s:
        # the new owner shares it; the old one, a user now, no longer may
        vms.add_vm_user(s, actor_for(s, "eve"), "web", "admin")
        with pytest.raises(PermissionDenied, match="fac may not add or remove"):
            vms.add_vm_user(s, actor_for(s, "fac"), "web", "oa")
        with pytest.raises(ConflictError, match="eve owns VM web already"):
            vms.transfer_ownership(s, SYSTEM, "web", "eve")
        assert s.scalar(select(VM.vm_identity)) == "ORG_A_fac_web"


def test_vm_users_and_owner_from_the_cli(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, _ = world_engine
    monkeypatch.setenv("BAADAL_DATABASE__URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("baadal.cli.door._acting_as", None)  # restored afterwards
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    assert run("--as", "fac", "vm", "users", "add", "web", "eve") == (
        0,
        "eve is a user of VM web\n",
    )
    code, out = run("--as", "stu", "vm", "users", "list", "web")
    assert code == 0 and "eve" in out and "owner" in out, out
    code, out = run("--as", "stu", "vm", "users", "remove", "web", "eve")
    assert code == 2 and "stu may not add or remove a VM's users" in out
    assert run("--as", "fac", "vm", "owner", "web", "stu")[0] == 2
    assert run("vm", "owner", "web", "stu") == (0, "VM web is owned by stu now\n")
    code, out = run("--as", "stu", "vm", "users", "remove", "web", "fac")
    assert code == 0, out
    code, out = run("vm", "users", "remove", "web", "stu")
    assert code == 2 and "stu owns VM web" in out
