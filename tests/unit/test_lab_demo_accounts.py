"""``baadal demo``'s portal accounts: one per role, passwords kept 0600 in the home and
the same on the next run, and they log in."""

from __future__ import annotations

import stat

import pytest
from sqlalchemy import Engine

from baadal import constants as C
from baadal.cli import demo_command
from baadal.config import Settings, get_settings
from baadal.db.schema import upgrade
from baadal.db.session import get_engine, session_scope
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


def test_baadal_demo_prints_the_portal_and_its_accounts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = get_settings()
    upgrade(get_engine(settings))
    demo_command.show_portal_accounts(settings)
    shown = capsys.readouterr().out
    assert "http://127.0.0.1:8080/" in shown
    kept = (settings.home / lab.DEMO_ACCOUNTS_FILE).read_text().split()
    for name in ("student", "faculty", "orgadmin", "cloudadmin"):
        password = kept[kept.index(name) + 2]
        assert name in shown and password in shown
