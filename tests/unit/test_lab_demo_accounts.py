"""``baadal demo``'s portal accounts: one per role, passwords kept 0600 in the home and
the same on the next run, and they log in."""

from __future__ import annotations

import stat

import pytest
from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import Settings
from baadal.db.session import session_scope
from baadal.services import lab, users
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.unit


def test_demo_accounts_per_role_with_kept_passwords(
    sqlite_engine: Engine, settings: Settings
) -> None:
    settings.database.url = str(sqlite_engine.url)
    with session_scope(sqlite_engine) as s:
        first = lab.demo_accounts(s, SYSTEM, settings)
    assert {(a.username, a.role) for a in first} == {
        ("student", C.Role.USER),
        ("faculty", C.Role.FACULTY),
        ("orgadmin", C.Role.ORGADMIN),
        ("cloudadmin", C.Role.ADMIN),
    }
    path = settings.home / lab.DEMO_ACCOUNTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(a.password in path.read_text() for a in first)
    with session_scope(sqlite_engine) as s:
        users.set_blocked(s, SYSTEM, "student", True)
        again = lab.demo_accounts(s, SYSTEM, settings)
    assert again == first
    for account in first:
        logged = users.check_login(sqlite_engine, settings, account.username, account.password)
        assert account.role in logged.roles
    with session_scope(sqlite_engine) as s:
        student = users.get_account(s, SYSTEM, "student")
        faculty = users.get_account(s, SYSTEM, "faculty")
    assert student.organisation == faculty.organisation == lab.DEMO_ORGANISATION
