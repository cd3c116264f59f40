"""LDAP logins against a real slapd (tests/support/slapd.py): the directory's people log
in with their own password, their account is made and refreshed from their entry, the
settings' admins land in the ADMIN organisation; wrong, empty and wildcard passwords or
names get nowhere; a directory that is down is a clear error. Passwords only travel
encrypted: ldaps:// and StartTLS with the certificate checked against [ldap] ca_file;
plain ldap:// only when the settings say it is wanted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from baadal import constants as C
from baadal.auth import ldap, roles, sessions
from baadal.config import Settings
from baadal.db.models import Organisation, User
from baadal.db.session import session_scope
from baadal.errors import ConfigError, PermissionDenied, RemoteCommandError
from tests.support.slapd import PEOPLE, LdapServer, make_ca, running_slapd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        server.add_person("asha", "asha-secret-1", "Asha", "Rao", "asha@iitd.test", "IITD")
        server.add_person("boss", "boss-secret-1", "Big", "Boss", "boss@iitd.test", "IITD")
        server.add_person("nomad", "nomad-secret-1", "No", "Mad", "nomad@else.test", "Elsewhere")
        server.add_person("system", "system-secret-1", "Not", "Baadal", "sys@iitd.test")
        yield server


@pytest.fixture
def ldap_settings(settings: Settings, slapd: LdapServer, tmp_path: Path) -> Settings:
    """StartTLS on the plain port, checked against the test CA."""
    settings.auth.auth_type = C.AuthType.LDAP
    settings.ldap.ldap_url = slapd.url
    settings.ldap.start_tls = True
    settings.ldap.ca_file = str(slapd.ca_file)
    settings.ldap.ldap_dn = PEOPLE
    settings.ldap.default_organisation = "GUESTS"
    settings.general.admin_uid = ["boss"]
    return settings


@pytest.fixture
def orgs(sqlite_engine: Engine) -> Engine:
    with session_scope(sqlite_engine) as s:
        s.add_all([Organisation(name="IITD"), Organisation(name="GUESTS")])
    return sqlite_engine


def login(engine: Engine, settings: Settings, username: str, password: str) -> tuple[str, ...]:
    with session_scope(engine) as s:
        user = sessions.login(s, settings, username, password)
        found = sorted(r.value for r in roles.user_roles(s, user.id))
        return (user.username, user.first_name, user.last_name, user.email,
                user.organisation.name if user.organisation else "", user.password, *found)  # fmt: skip


def test_directory_people_log_in_and_get_accounts(
    ldap_settings: Settings, orgs: Engine, slapd: LdapServer
) -> None:
    assert not sessions.is_auth_type_db(ldap_settings)
    assert ldap.fetch_ldap_user(ldap_settings, "asha").email == "asha@iitd.test"
    assert ldap.fetch_ldap_user(ldap_settings, "ghost") is None
    assert login(orgs, ldap_settings, "asha", "asha-secret-1") == (
        "asha", "Asha", "Rao", "asha@iitd.test", "IITD", "", "user",
    )  # fmt: skip
    assert login(orgs, ldap_settings, "boss", "boss-secret-1") == (
        "boss", "Big", "Boss", "boss@iitd.test", "ADMIN", "", "admin", "user",
    )  # fmt: skip
    # an organisation Baadal does not know: the default one
    assert login(orgs, ldap_settings, "nomad", "nomad-secret-1")[4] == "GUESTS"
    # the directory changed: the next login refreshes the account
    with slapd.connection() as conn:
        conn.modify(f"uid=asha,{PEOPLE}", {"sn": [("MODIFY_REPLACE", ["Rao-Singh"])]})
    assert login(orgs, ldap_settings, "asha", "asha-secret-1")[2] == "Rao-Singh"
    # the directory matches uids without regard to case: still the same account
    assert login(orgs, ldap_settings, "ASHA", "asha-secret-1")[0] == "asha"
    with session_scope(orgs) as s:
        assert s.query(User).filter(User.username.in_(["asha", "ASHA"])).count() == 1
        # an admin moves asha; the next login keeps the admin's choice
        asha = s.query(User).filter(User.username == "asha").one()
        asha.organisation = s.query(Organisation).filter(Organisation.name == "GUESTS").one()
        # and another account holds nomad's address: nomad still logs in, keeping its own
        s.query(User).filter(User.username == "nomad").update({"email": None})
        s.add(User(username="other", email="nomad@else.test"))
    assert login(orgs, ldap_settings, "asha", "asha-secret-1")[4] == "GUESTS"
    assert login(orgs, ldap_settings, "nomad", "nomad-secret-1")[3] is None


def test_wrong_empty_and_wildcard_logins_get_nowhere(ldap_settings: Settings, orgs: Engine) -> None:
    for username, password in (
        ("asha", "wrong-secret"),
        ("asha", ""),  # an unauthenticated bind would "succeed"
        ("*", "asha-secret-1"),  # a filter wildcard must not match anyone
        ("asha)(uid=*", "asha-secret-1"),
        ("ghost", "whatever"),
        ("asha", "\x07not-a-password"),  # refused by the client library: a wrong password
        ("system", "system-secret-1"),  # the directory's "system" is not Baadal's
    ):
        with pytest.raises(PermissionDenied, match=sessions.BAD_LOGIN):
            login(orgs, ldap_settings, username, password)
    with session_scope(orgs) as s:
        assert s.query(User).filter(User.username != "system").count() == 0
        assert s.get(User, C.SYSTEM_USER_ID).last_name == "User"  # untouched


def test_blocked_accounts_and_a_directory_that_is_down(
    ldap_settings: Settings, orgs: Engine, slapd: LdapServer
) -> None:
    login(orgs, ldap_settings, "asha", "asha-secret-1")
    with session_scope(orgs) as s:
        s.query(User).filter(User.username == "asha").update({"block_user": True})
    with slapd.connection() as conn:
        conn.modify(f"uid=asha,{PEOPLE}", {"givenName": [("MODIFY_REPLACE", ["Changed"])]})
    with pytest.raises(PermissionDenied, match="'asha' is blocked"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    with session_scope(orgs) as s:  # refused before anything was changed
        assert s.query(User).filter(User.username == "asha").one().first_name == "Asha"
    ldap_settings.ldap.ldap_dn = "ou=nobody,dc=baadal,dc=test"
    with pytest.raises(ConfigError, match="does not exist in the directory"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    ldap_settings.ldap.ldap_url = "ldap://127.0.0.1:1"
    ldap_settings.ldap.timeout_s = 2
    with pytest.raises(RemoteCommandError, match=re.escape("ldap://127.0.0.1:1")):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    ldap_settings.ldap.ldap_url = ""
    with pytest.raises(ConfigError, match="need"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")


def test_passwords_travel_only_over_checked_tls(
    ldap_settings: Settings, orgs: Engine, slapd: LdapServer, tmp_path: Path
) -> None:
    # StartTLS (the fixture's settings) and ldaps://, both with the right CA
    assert login(orgs, ldap_settings, "asha", "asha-secret-1")[0] == "asha"
    ldap_settings.ldap.start_tls = False
    ldap_settings.ldap.ldap_url = slapd.ldaps_url
    assert login(orgs, ldap_settings, "asha", "asha-secret-1")[0] == "asha"
    # a certificate some other CA signed is refused, on ldaps:// and with StartTLS
    ldap_settings.ldap.ca_file = str(make_ca(tmp_path / "other"))
    with pytest.raises(RemoteCommandError, match="certificate"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    ldap_settings.ldap.ldap_url, ldap_settings.ldap.start_tls = slapd.url, True
    with pytest.raises(RemoteCommandError, match="certificate"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    # plain ldap:// sends passwords in clear: refused unless explicitly allowed
    ldap_settings.ldap.start_tls = False
    with pytest.raises(ConfigError, match="in clear"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
    ldap_settings.ldap.allow_insecure = True
    assert login(orgs, ldap_settings, "asha", "asha-secret-1")[0] == "asha"
    # a CA file that cannot be read is a settings error, not a refused login
    ldap_settings.ldap.allow_insecure, ldap_settings.ldap.start_tls = False, True
    ldap_settings.ldap.ca_file = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="ca_file"):
        login(orgs, ldap_settings, "asha", "asha-secret-1")
