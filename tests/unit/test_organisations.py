"""Organisations: add, list, show, rename, registration per organisation, the security
domains each may use, its orgadmins; the README's registration works on a fresh install."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import Organisation, User
from baadal.db.session import session_scope
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.services import networks, organisations
from baadal.services.policy import SYSTEM, actor_for

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"


def _person(engine: Engine, name: str, org: str, *roles: C.Role) -> None:
    with session_scope(engine) as s:
        org_id = s.scalar(select(Organisation.id).where(Organisation.name == org))
        user = User(username=name, organisation_id=org_id)
        s.add(user)
        s.flush()
        add_membership_db(s, user.id, (*roles, C.Role.USER))


def test_add_show_rename_and_registration(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        made = organisations.add_organisation(
            s, SYSTEM, "IITD", details="IIT Delhi", registration=True
        )
        assert (made.name, made.details, made.allows_registration) == ("IITD", "IIT Delhi", True)
        organisations.add_organisation(s, SYSTEM, "CSE")
    _person(sqlite_engine, "oa", "IITD", C.Role.ORGADMIN)
    _person(sqlite_engine, "stu", "IITD")
    with session_scope(sqlite_engine) as s:
        shown = organisations.get_organisation(s, SYSTEM, "IITD")
        assert (shown.orgadmins, shown.users) == (("oa",), 2)
        listed = organisations.list_organisations(s, SYSTEM).items
        assert [(o.name, o.allows_registration) for o in listed] == [
            ("ADMIN", False),
            ("IITD", True),
            ("CSE", False),
        ]
        assert organisations.registration_organisations(s) == ["IITD"]
        renamed = organisations.rename_organisation(s, SYSTEM, "CSE", "CSE2")
        assert renamed.name == "CSE2"
        closed = organisations.set_organisation(s, SYSTEM, "IITD", registration=False)
        assert not closed.allows_registration
        assert organisations.registration_organisations(s) == []


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: organisations.add_organisation(s, SYSTEM, "IITD"), ConflictError, "exists"),
        (lambda s: organisations.add_organisation(s, SYSTEM, "a~b"), ValidationError, "only"),
        (lambda s: organisations.add_organisation(s, SYSTEM, "x\n"), ValidationError, "only"),
        (lambda s: organisations.add_organisation(s, SYSTEM, "x" * 31), ValidationError, "1-30"),
        (
            lambda s: organisations.add_organisation(s, SYSTEM, "X", details="a\x1bb"),
            ValidationError,
            "control characters",
        ),
        (
            lambda s: organisations.set_organisation(s, SYSTEM, "ADMIN", registration=True),
            ValidationError,
            "takes no self-registrations",
        ),
        (lambda s: organisations.set_organisation(s, SYSTEM, "IITD"), ValidationError, "nothing"),
        (
            lambda s: organisations.rename_organisation(s, SYSTEM, "ADMIN", "ROOT"),
            ValidationError,
            "keeps its name",
        ),
        (
            lambda s: organisations.rename_organisation(s, SYSTEM, "IITD", "ADMIN"),
            ConflictError,
            "exists",
        ),
        (lambda s: organisations.get_organisation(s, SYSTEM, "Nowhere"), NotFoundError, "no org"),
        (lambda s: organisations.set_domains(s, SYSTEM, "IITD"), ValidationError, "nothing"),
        (
            lambda s: organisations.set_domains(s, SYSTEM, "IITD", add=["lab"], remove=["lab"]),
            ValidationError,
            "both added and removed: lab",
        ),
        (
            lambda s: organisations.set_domains(s, SYSTEM, "IITD", add=["lab", "nope"]),
            NotFoundError,
            "no security domain named 'nope'",
        ),
        (
            lambda s: organisations.set_domains(s, SYSTEM, "IITD", add=["open"]),
            ConflictError,
            "already",
        ),
        (
            lambda s: organisations.set_domains(s, SYSTEM, "IITD", remove=["lab"]),
            NotFoundError,
            "was not given",
        ),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    sqlite_engine: Engine, call: object, error: type[Exception], message: str
) -> None:
    with session_scope(sqlite_engine) as s:
        organisations.add_organisation(s, SYSTEM, "IITD")
        networks.add_security_domain(s, SYSTEM, "lab", vlan_tag=20, cidr="10.20.0.0/24")
        networks.add_security_domain(s, SYSTEM, "open", vlan_tag=21, cidr="10.21.0.0/24")
        organisations.set_domains(s, SYSTEM, "IITD", add=["open"])
    before = _orgs(sqlite_engine)
    with session_scope(sqlite_engine) as s, pytest.raises(error, match=message):
        call(s)  # type: ignore[operator]
    assert _orgs(sqlite_engine) == before


def _orgs(engine: Engine) -> list[organisations.OrganisationInfo]:
    with session_scope(engine) as s:
        return organisations.list_organisations(s, SYSTEM).items


def test_a_domain_given_to_an_organisation_is_what_its_people_see(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as s:
        organisations.add_organisation(s, SYSTEM, "IITD")
        networks.add_security_domain(
            s, SYSTEM, "private", vlan_tag=30, cidr="10.30.0.0/24", visible_to_all=False
        )
    _person(sqlite_engine, "stu", "IITD")

    def seen() -> list[str]:
        with session_scope(sqlite_engine) as s:
            return [d.name for d in networks.list_security_domains(s, actor_for(s, "stu")).items]

    assert seen() == []
    with session_scope(sqlite_engine) as s:
        shown = organisations.set_domains(s, SYSTEM, "IITD", add=["private"])
        assert shown.domains == ("private",)
    assert seen() == ["private"]
    with session_scope(sqlite_engine) as s:
        assert organisations.set_domains(s, SYSTEM, "IITD", remove=["private"]).domains == ()
    assert seen() == []


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("baadal.cli.door._acting_as", None)  # restored afterwards
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*argv: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(argv), input=stdin)

    return run


def test_readme_registration_works_on_a_fresh_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _cli(tmp_path, monkeypatch)
    assert run("db", "upgrade").exit_code == 0
    register = ("user", "register", "alice", "--email", "alice@example.org", "--org", "IITD",
                "--password-stdin")  # fmt: skip
    closed = run(*register, stdin=PASSWORD + "\n")
    assert closed.exit_code == 2 and "'IITD' does not take self-registrations" in closed.output
    added = run("org", "add", "IITD", "--registration", "--details", "IIT Delhi")
    assert added.exit_code == 0 and "self-registration: yes" in added.output, added.output
    made = run(*register, stdin=PASSWORD + "\n")
    assert made.exit_code == 0 and "registered alice (awaiting approval)" in made.output
    assert run("user", "approve", "alice").exit_code == 0
    assert run("user", "roles", "alice", "--set", "orgadmin").exit_code == 0
    shown = run("--as", "alice", "org", "show", "IITD")
    assert shown.exit_code == 0 and "alice" in shown.output and "yes" in shown.output
    assert "IITD" in run("org", "list").output
    # an orgadmin sees their own organisation only, and changes none
    assert run("org", "add", "CSE").exit_code == 0
    other = run("--as", "alice", "org", "show", "CSE")
    assert other.exit_code == 2 and "alice may not see an organisation" in other.output
    refused = run("--as", "alice", "org", "set", "IITD", "--no-registration")
    assert refused.exit_code == 2 and "alice may not" in refused.output
    assert run("--as", "alice", "org", "list").exit_code == 2
    # closing it stops further registrations; a rename keeps the people
    closing = run("org", "set", "IITD", "--no-registration").output
    assert re.search(r"self-registration\s*│\s*no", closing), closing
    bob = run("user", "register", "bob", "--org", "IITD", "--password-stdin", stdin="x" * 9)
    assert bob.exit_code == 2 and "register without one" in bob.output
    assert run("org", "rename", "IITD", "IITD2").exit_code == 0
    assert "IITD2" in run("user", "list").output
    bad = run("org", "rename", "IITD2", "bad name")
    assert bad.exit_code == 2 and "may contain only" in bad.output
    assert run("org", "domains", "IITD2").exit_code == 2
