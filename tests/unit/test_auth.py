"""Accounts with the database as identity source: argon2 hashes, registration awaiting
approval, one message for every wrong login, roles from the settings and from an admin.
LDAP logins against a real slapd are in tests/integration/test_auth_ldap.py."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from baadal import constants as C
from baadal.auth import accounts, ldap, roles, sessions
from baadal.cli import door
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import Organisation, User, UserMembership
from baadal.db.session import make_engine, session_scope
from baadal.errors import (
    ConfigError,
    ConflictError,
    LoginThrottled,
    PermissionDenied,
    ValidationError,
)
from baadal.services import users as user_service
from baadal.timeutil import utcnow

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    settings.general.admin_uid = ["root_admin"]
    settings.general.faculty_uid = ["prof"]
    return settings


def register(engine: Engine, settings: Settings, username: str, **kw: str) -> int:
    info = accounts.UserInfo(username, kw.get("first", "A"), kw.get("last", "B"), kw.get("email"),
                          kw.get("org"))  # fmt: skip
    with session_scope(engine) as s:
        return accounts.register_callback(s, settings, info, kw.get("password", PASSWORD)).id


def login(engine: Engine, settings: Settings, username: str, password: str = PASSWORD) -> User:
    with session_scope(engine) as s:
        user = sessions.login(s, settings, username, password)
        s.expunge(user)
        return user


def test_registration_waits_for_approval_then_logs_in(
    sqlite_engine: Engine, auth_settings: Settings
) -> None:
    user_id = register(sqlite_engine, auth_settings, "alice", email="Alice@Example.org")
    with session_scope(sqlite_engine) as s:
        alice = s.get(User, user_id)
        assert alice.password.startswith("$argon2id$") and PASSWORD not in alice.password
        assert (alice.email, alice.registration_key) == (
            "alice@example.org",
            C.RegistrationKey.PENDING,
        )
    with pytest.raises(PermissionDenied, match="awaits an administrator's approval"):
        login(sqlite_engine, auth_settings, "alice")
    with session_scope(sqlite_engine) as s:
        accounts.approve_user(s, "alice")
        with pytest.raises(ConflictError, match="not awaiting approval"):
            accounts.approve_user(s, "alice")
    assert login(sqlite_engine, auth_settings, "alice").id == user_id
    with session_scope(sqlite_engine) as s:
        assert roles.user_roles(s, user_id) == {C.Role.USER}


def test_login_after_registration_when_the_settings_allow_it(
    sqlite_engine: Engine, auth_settings: Settings
) -> None:
    auth_settings.auth.login_after_registration = True
    register(sqlite_engine, auth_settings, "bob")
    assert login(sqlite_engine, auth_settings, "bob").username == "bob"


def test_every_wrong_login_says_the_same_and_tells_nothing(
    sqlite_engine: Engine, auth_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    auth_settings.auth.login_after_registration = True
    register(sqlite_engine, auth_settings, "carol")
    with session_scope(sqlite_engine) as s:
        accounts.set_blocked(s, "carol", True)
    caplog.set_level(logging.DEBUG)
    for username, password in (("carol", "wrong password"), ("nobody", PASSWORD),
                               ("carol", ""), ("", "")):  # fmt: skip
        with pytest.raises(PermissionDenied) as caught:
            login(sqlite_engine, auth_settings, username, password)
        assert str(caught.value) == sessions.BAD_LOGIN
    # only the right password learns that the account is blocked
    with pytest.raises(PermissionDenied, match="'carol' is blocked"):
        login(sqlite_engine, auth_settings, "carol")
    assert PASSWORD not in caplog.text
    # an unknown user costs a hash check too (no quick answer to probe names with)
    started = time.perf_counter()
    with pytest.raises(PermissionDenied):
        login(sqlite_engine, auth_settings, "nobody", "whatever1")
    assert time.perf_counter() - started > 0.005


def test_bad_registrations_change_nothing(sqlite_engine: Engine, auth_settings: Settings) -> None:
    with session_scope(sqlite_engine) as s:
        s.add_all([Organisation(name="IITD", allows_registration=True), Organisation(name="CSE")])
    register(sqlite_engine, auth_settings, "dave", email="dave@example.org")
    cases = [
        ({"username": "dave"}, ConflictError, "username 'dave' is taken"),
        ({"username": "eve", "email": "DAVE@example.org"}, ConflictError, "another account"),
        ({"username": "eve", "email": "not-an-address"}, ValidationError, "not an e-mail"),
        ({"username": "eve", "password": "short"}, ValidationError, "8-1024 characters"),
        ({"username": "../eve"}, ValidationError, "may contain only"),
        # one that does not exist and one that takes no registrations: the same answer
        ({"username": "eve", "org": "Atlantis"}, ValidationError, "choose one of IITD "),
        ({"username": "eve", "org": "CSE"}, ValidationError, "'CSE' does not take self-reg"),
        # anyone could register into the administrators' organisation
        ({"username": "eve", "org": "ADMIN"}, ValidationError, "'ADMIN' does not take self-reg"),
    ]
    for kw, error, message in cases:
        args = dict(kw)
        username = args.pop("username")
        with pytest.raises(error, match=message):
            register(sqlite_engine, auth_settings, username, **args)
    with session_scope(sqlite_engine) as s:
        assert sorted(s.scalars(select(User.username))) == ["dave", "system"]


def test_registration_never_takes_roles_from_the_settings(
    sqlite_engine: Engine, auth_settings: Settings
) -> None:
    """admin_uid names whom a directory vouches for; anyone can register any name."""
    auth_settings.auth.login_after_registration = True
    with session_scope(sqlite_engine) as s:
        s.add(Organisation(name="IITD", allows_registration=True))
    prof = register(sqlite_engine, auth_settings, "prof", org="IITD")
    admin = register(sqlite_engine, auth_settings, "root_admin")
    login(sqlite_engine, auth_settings, "root_admin")
    with session_scope(sqlite_engine) as s:
        assert roles.user_roles(s, admin) == {C.Role.USER}
        assert roles.user_roles(s, prof) == {C.Role.USER}
        assert s.get(User, prof).organisation.name == "IITD"
        # an admin grants roles; the change is exact, and user always stays
        assert roles.add_or_update_user_memberships(s, prof, [C.Role.ORGADMIN]) == {
            C.Role.ORGADMIN, C.Role.USER,
        }  # fmt: skip
        assert roles.user_roles(s, prof) == {C.Role.ORGADMIN, C.Role.USER}
        with pytest.raises(ValidationError, match="unknown role 'king'"):
            roles.parse_role("king")
    login(sqlite_engine, auth_settings, "prof")  # a login keeps the admin's choice
    with session_scope(sqlite_engine) as s:
        assert roles.user_roles(s, prof) == {C.Role.ORGADMIN, C.Role.USER}
        # a local account that lost every membership gets the user role back, no more
        s.query(UserMembership).filter(UserMembership.user_id == admin).delete()
    login(sqlite_engine, auth_settings, "root_admin")
    with session_scope(sqlite_engine) as s:
        assert roles.user_roles(s, admin) == {C.Role.USER}
    # the settings' lists name whom a directory vouches for
    assert roles.fetch_user_role(auth_settings, "root_admin") == [C.Role.ADMIN, C.Role.USER]
    assert roles.fetch_user_role(auth_settings, "prof") == [C.Role.FACULTY, C.Role.USER]


def test_new_password_and_weak_hashes_renewed(
    sqlite_engine: Engine, auth_settings: Settings
) -> None:
    auth_settings.auth.login_after_registration = True
    user_id = register(sqlite_engine, auth_settings, "frank")
    weak = accounts.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with session_scope(sqlite_engine) as s:
        s.get(User, user_id).password = weak
    login(sqlite_engine, auth_settings, "frank")
    with session_scope(sqlite_engine) as s:
        renewed = s.get(User, user_id).password
        assert renewed != weak and not accounts.needs_rehash(renewed)
        accounts.set_password(s, "frank", "another good one")
    with pytest.raises(PermissionDenied):
        login(sqlite_engine, auth_settings, "frank")
    assert login(sqlite_engine, auth_settings, "frank", "another good one").id == user_id
    assert sessions.is_auth_type_db(auth_settings)


def test_user_cli_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("BAADAL_GENERAL__FACULTY_UID", '["gita"]')
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*argv: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(argv), input=stdin)

    assert run("db", "upgrade").exit_code == 0
    made = run("user", "register", "gita", "--email", "gita@example.org", "--password-stdin",
               stdin=PASSWORD + "\n")  # fmt: skip
    assert made.exit_code == 0 and "registered gita (awaiting approval)" in made.output
    refused = run("user", "login", "gita", "--password-stdin", stdin=PASSWORD + "\n")
    assert refused.exit_code == 2 and "awaits an administrator's approval" in refused.output
    assert run("user", "approve", "gita").exit_code == 0
    ok = run("user", "login", "gita", "--password-stdin", stdin=PASSWORD + "\n")
    assert ok.exit_code == 0 and "roles: user" in ok.output, ok.output  # not faculty_uid's
    wrong = run("user", "login", "gita", "--password-stdin", stdin="nope nope\n")
    assert wrong.exit_code == 2 and sessions.BAD_LOGIN in wrong.output
    assert "gita: orgadmin, user" in run("user", "roles", "gita", "--set", "orgadmin").output
    bad = run("user", "roles", "gita", "--set", "king")
    assert bad.exit_code == 2 and "unknown role 'king'" in bad.output
    assert run("user", "block", "gita").exit_code == 0
    listed = run("user", "list").output
    assert "gita" in listed and "blocked" in listed and "system" not in listed
    # a password typed at the prompt, twice, never echoed
    monkeypatch.setattr(door, "has_terminal", lambda: True)
    typed = run("user", "passwd", "gita", stdin="a new password\na new password\n")
    assert typed.exit_code == 0 and "a new password" not in typed.output
    get_settings.cache_clear()


@pytest.mark.parametrize("argv", [["register", "hema"], ["passwd", "hema"], ["login", "hema"]])
def test_password_prompt_without_a_terminal_names_the_option(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No terminal (a script, a pipe) and no --password-stdin: one line saying which
    option to use and exit 2, not "internal error (Abort)"; nothing is registered."""
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["user", *argv], input="")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: no terminal to ask for the password: give it with --password-stdin"]
    assert "hema" not in runner.invoke(app, ["user", "list"]).output
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("info", "match"),
    [
        (accounts.UserInfo("eve\n"), "may contain only"),
        (accounts.UserInfo("eve\r"), "may contain only"),
        (accounts.UserInfo("eve", first_name="E\x1b[2J"), "first name must not contain control"),
        (accounts.UserInfo("eve", last_name="V\n"), "last name must not contain control"),
        (accounts.UserInfo("eve", email="e\x1b@example.org"), "is not an e-mail address"),
    ],
)
def test_names_with_control_characters_are_refused(
    sqlite_engine: Engine, auth_settings: Settings, info: accounts.UserInfo, match: str
) -> None:
    """Issue 12 items 7 and 8: full matches and no control or escape characters."""
    with session_scope(sqlite_engine) as s, pytest.raises(ValidationError, match=match):
        accounts.register_callback(s, auth_settings, info, PASSWORD)
    with session_scope(sqlite_engine) as s:
        assert s.scalar(select(User.id).where(User.username.like("eve%"))) is None


# --------------------------------------------------------------------------- throttling


class Clock:
    """The services' clock, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = utcnow()
        monkeypatch.setattr(user_service, "utcnow", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_failed_logins_of_a_name_are_throttled_with_a_clear_wait(
    sqlite_engine: Engine,
    auth_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth_settings.auth.login_after_registration = True
    register(sqlite_engine, auth_settings, "dora")
    clock = Clock(monkeypatch)
    caplog.set_level(logging.INFO)

    def attempt(password: str, username: str = "dora", source: str = "192.0.2.7") -> object:
        return user_service.check_login(
            sqlite_engine, auth_settings, username, password, source=source
        )

    for _ in range(C.LOGIN_USER_MAX_FAILURES):
        with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
            attempt("guess-guess")
    assert "failed login of 'dora' from 192.0.2.7" in caplog.text
    assert "guess-guess" not in caplog.text  # failures are logged, passwords never
    # locked: even the right password is not checked, from anywhere, in any case
    with pytest.raises(LoginThrottled, match="try again in 60 s") as caught:
        attempt(PASSWORD, source="198.51.100.1")
    with pytest.raises(LoginThrottled):
        attempt("guess-guess", username="DORA")
    assert caught.value.retry_after_s == 60 and isinstance(caught.value, PermissionDenied)
    assert "login of 'dora' from 198.51.100.1 refused: too many failed logins" in caplog.text
    # the same for a name nobody has: a lockout tells nothing about who exists
    for _ in range(C.LOGIN_USER_MAX_FAILURES):
        with pytest.raises(PermissionDenied):
            attempt("guess-guess", username="nobody", source="198.51.100.2")
    with pytest.raises(LoginThrottled, match="try again in 60 s"):
        attempt(PASSWORD, username="nobody", source="198.51.100.2")
    # after the wait one more failure doubles it; the state is in the database, so a
    # second process (another engine) sees it
    clock.advance(61)
    with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
        attempt("guess-again")
    other = make_engine(str(sqlite_engine.url))
    with pytest.raises(LoginThrottled, match="try again in 120 s"):
        user_service.check_login(other, auth_settings, "dora", PASSWORD)
    other.dispose()
    # the right password once the wait is over, and the count starts again
    clock.advance(121)
    assert attempt(PASSWORD).username == "dora"
    with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
        attempt("guess-guess")


def test_failed_logins_from_one_source_are_throttled(
    sqlite_engine: Engine, auth_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_settings.auth.login_after_registration = True
    register(sqlite_engine, auth_settings, "emil")
    Clock(monkeypatch)
    for i in range(C.LOGIN_SOURCE_MAX_FAILURES):  # a different name each time
        with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
            user_service.check_login(
                sqlite_engine, auth_settings, f"user{i}", "guess-guess", source="203.0.113.9"
            )
    with pytest.raises(LoginThrottled, match="try again in 60 s"):
        user_service.check_login(
            sqlite_engine, auth_settings, "emil", PASSWORD, source="203.0.113.9"
        )
    account = user_service.check_login(
        sqlite_engine, auth_settings, "emil", PASSWORD, source="203.0.113.10"
    )
    assert account.username == "emil"


def test_the_dummy_hash_is_ready_before_the_first_unknown_user(
    sqlite_engine: Engine, auth_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first login of an unknown name must not cost an extra hash (twice as long as
    any other login: a way to tell names apart)."""
    assert sessions.DUMMY_HASH.startswith("$argon2id$")
    assert not accounts.needs_rehash(sessions.DUMMY_HASH)

    def no_hashing(password: str) -> str:
        raise AssertionError("a hash was made during a login")

    monkeypatch.setattr(accounts, "hash_password", no_hashing)
    with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
        login(sqlite_engine, auth_settings, "never-seen", "whatever1")


def test_plain_ldap_is_refused_unless_asked_for(auth_settings: Settings) -> None:
    """Without StartTLS an ldap:// URL would send every password in clear."""
    auth_settings.auth.auth_type = C.AuthType.LDAP
    auth_settings.ldap.ldap_url = "ldap://ldap.example.org"
    auth_settings.ldap.ldap_dn = "ou=people,dc=example,dc=org"
    with pytest.raises(ConfigError, match="in clear"):
        ldap.ldap_authenticate(auth_settings, "asha", "a password")
    auth_settings.ldap.start_tls = True
    auth_settings.ldap.ca_file = "/nonexistent/ca.pem"
    with pytest.raises(ConfigError, match="ca_file"):
        ldap.ldap_authenticate(auth_settings, "asha", "a password")


def test_self_registration_names_no_organisation_by_default(
    sqlite_engine: Engine, settings: Settings
) -> None:
    """By default no organisation takes self-registrations; ADMIN never did on purpose."""
    with session_scope(sqlite_engine) as s:
        assert accounts.registration_organisations(s) == []
    with pytest.raises(ValidationError, match=r"'ADMIN' does not take .*register without one"):
        register(sqlite_engine, settings, "mallory", org="ADMIN")
    user_id = register(sqlite_engine, settings, "mallory")
    with session_scope(sqlite_engine) as s:
        assert s.get(User, user_id).organisation is None
