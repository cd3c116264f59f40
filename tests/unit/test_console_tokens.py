"""One-time console tokens (services.consoles): stored hashed, one connection each, short
lived, bound to their user and VM, and made only under the VNC grant's rules."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.config import Settings
from baadal.db.models import VM, ConsoleToken, User, UserVMMap, VncAccess
from baadal.db.session import session_scope
from baadal.errors import ConflictError, PermissionDenied
from baadal.services import consoles
from baadal.services.policy import Actor, actor_for
from tests.support.cloud import Cloud
from tests.unit import test_vm_lifecycle as lifecycle
from tests.unit.test_nat import _console_password

pytestmark = pytest.mark.unit

cloud_settings = lifecycle.cloud_settings
fake_cloud = lifecycle.fake_cloud


def _add_user(engine: Engine, name: str, vm_id: int | None = None) -> int:
    with session_scope(engine) as s:
        user = User(username=name, registration_key=C.RegistrationKey.ACTIVE)
        s.add(user)
        s.flush()
        add_membership_db(s, user.id, (C.Role.USER,))
        if vm_id is not None:
            s.add(UserVMMap(user_id=user.id, vm_id=vm_id))
        return user.id


def _actor(engine: Engine, name: str) -> Actor:
    with Session(engine) as s:
        return actor_for(s, name)


def _count(engine: Engine, table: type) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


@pytest.fixture
def web(sqlite_engine: Engine, cloud_settings: Settings, fake_cloud: Cloud) -> int:
    """A running VM 'web' (on the fake driver: its console password can be read back)
    shared with stu; eve is unrelated."""
    vm_id = lifecycle.create(sqlite_engine, cloud_settings)
    _add_user(sqlite_engine, "stu", vm_id)
    _add_user(sqlite_engine, "eve")
    return vm_id


def _user_id(engine: Engine, name: str) -> int:
    with Session(engine) as s:
        return s.scalar(select(User.id).where(User.username == name))


def test_a_token_is_stored_hashed_and_opens_its_console_once(
    sqlite_engine: Engine, cloud_settings: Settings, web: int
) -> None:
    stu = _actor(sqlite_engine, "stu")
    ticket = consoles.open_console(sqlite_engine, stu, cloud_settings, "web")
    # the grant's fresh password is what the console accepts now; neither is in repr
    assert ticket.password == _console_password(sqlite_engine, web)
    assert ticket.token not in repr(ticket) and ticket.password not in repr(ticket)
    assert ticket.path == f"{C.CONSOLE_WEBSOCKET_PATH}?token={ticket.token}"
    assert len(ticket.token) == 43
    with Session(sqlite_engine) as s:
        row = s.scalars(select(ConsoleToken)).one()
        vm = s.get(VM, web)
        where = (vm.host.address, vm.vnc_port)
        assert row.token_hash == hashlib.sha256(ticket.token.encode()).hexdigest()
        assert ticket.token not in repr(tuple(s.execute(select(ConsoleToken.__table__)).one()))
        assert (row.user_id, row.vm_id, row.used_at) == (stu.user_id, web, None)
        assert row.expires == row.created + timedelta(seconds=C.CONSOLE_TOKEN_TTL_S)
        assert s.scalar(select(func.count()).select_from(VncAccess)) == 1  # one grant

    target = consoles.redeem_console_token(sqlite_engine, ticket.token, stu.user_id)
    assert target is not None and (target.vm_id, target.host, target.port) == (web, *where)
    # one connection per token
    assert consoles.redeem_console_token(sqlite_engine, ticket.token, stu.user_id) is None
    with Session(sqlite_engine) as s:
        assert s.scalars(select(ConsoleToken)).one().used_at is not None


def test_an_expired_unknown_or_malformed_token_is_refused(
    sqlite_engine: Engine, cloud_settings: Settings, web: int
) -> None:
    stu = _actor(sqlite_engine, "stu")
    ticket = consoles.open_console(sqlite_engine, stu, cloud_settings, web)
    with session_scope(sqlite_engine) as s:
        row = s.scalars(select(ConsoleToken)).one()
        row.expires = row.created  # as if its minute had passed
    assert consoles.redeem_console_token(sqlite_engine, ticket.token, stu.user_id) is None
    for token in ("A" * 43, "", "A" * 44, "x" * 42 + "/", ticket.token + "\n", None, 7):
        assert consoles.redeem_console_token(sqlite_engine, token, stu.user_id) is None


def test_a_token_opens_only_its_own_vm_for_its_own_user(
    sqlite_engine: Engine, cloud_settings: Settings, web: int
) -> None:
    other = lifecycle.create(sqlite_engine, cloud_settings, "other")
    stu, eve_id = _actor(sqlite_engine, "stu"), _user_id(sqlite_engine, "eve")
    ticket = consoles.open_console(sqlite_engine, stu, cloud_settings, web)
    # another user presenting it is refused, and does not use it up
    assert consoles.redeem_console_token(sqlite_engine, ticket.token, eve_id) is None
    target = consoles.redeem_console_token(sqlite_engine, ticket.token, stu.user_id)
    with Session(sqlite_engine) as s:
        ports = {vm_id: s.get(VM, vm_id).vnc_port for vm_id in (web, other)}
    assert target is not None and (target.vm_id, target.port) == (web, ports[web])
    assert ports[web] != ports[other]


@pytest.mark.parametrize("change", ["unshared", "blocked", "stopped"])
def test_a_token_whose_user_or_vm_changed_is_refused(
    sqlite_engine: Engine, cloud_settings: Settings, web: int, change: str
) -> None:
    stu = _actor(sqlite_engine, "stu")
    ticket = consoles.open_console(sqlite_engine, stu, cloud_settings, web)
    with session_scope(sqlite_engine) as s:
        if change == "unshared":
            s.execute(delete(UserVMMap).where(UserVMMap.user_id == stu.user_id))
        elif change == "blocked":
            s.get(User, stu.user_id).block_user = True
        else:
            s.get(VM, web).status = C.VMStatus.SHUTDOWN
    assert consoles.redeem_console_token(sqlite_engine, ticket.token, stu.user_id) is None


def test_a_refused_console_changes_nothing(
    sqlite_engine: Engine, cloud_settings: Settings, web: int
) -> None:
    password = _console_password(sqlite_engine, web)
    with pytest.raises(PermissionDenied, match="eve may not open a VM's console"):
        consoles.open_console(sqlite_engine, _actor(sqlite_engine, "eve"), cloud_settings, web)
    with session_scope(sqlite_engine) as s:
        s.get(VM, web).status = C.VMStatus.SUSPENDED
    with pytest.raises(ConflictError, match="not running"):
        consoles.open_console(sqlite_engine, _actor(sqlite_engine, "stu"), cloud_settings, web)
    assert _count(sqlite_engine, ConsoleToken) == _count(sqlite_engine, VncAccess) == 0
    assert _console_password(sqlite_engine, web) == password


def test_ten_consoles_a_day_then_refused(
    sqlite_engine: Engine, cloud_settings: Settings, web: int
) -> None:
    stu = _actor(sqlite_engine, "stu")
    tickets = [
        consoles.open_console(sqlite_engine, stu, cloud_settings, web)
        for _ in range(C.MAX_VNC_ALLOWED_IN_A_DAY)
    ]
    assert len({t.password for t in tickets}) == len({t.token for t in tickets}) == 10
    with pytest.raises(ConflictError, match="10 VNC grants in the last 24 hours"):
        consoles.open_console(sqlite_engine, stu, cloud_settings, web)
    assert _count(sqlite_engine, ConsoleToken) == _count(sqlite_engine, VncAccess) == 10
