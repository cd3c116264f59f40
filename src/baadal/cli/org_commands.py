"""``baadal org add|list|show|rename|set|domains``: organisations, the security domains
each may use, and whether people may register themselves into them."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli.door import actor, db, handle_errors, print_fields, print_table, read_db, say
from baadal.services import organisations
from baadal.services.organisations import OrganisationInfo

app = typer.Typer(help="Organisations.", no_args_is_help=True)

OrgArg = Annotated[str, typer.Argument(help="organisation name")]
DetailsOpt = Annotated[str | None, typer.Option(help="a description")]
RegistrationOpt = Annotated[
    bool | None,
    typer.Option(
        "--registration/--no-registration",
        help="people may register themselves into it (each account then awaits approval)",
    ),
]


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _show(org: OrganisationInfo) -> None:
    print_fields(
        f"Organisation {org.name}",
        [
            ("name", org.name),
            ("details", org.details),
            ("self-registration", _yes_no(org.allows_registration)),
            ("security domains", ", ".join(org.domains) or "(only those visible to all)"),
            ("orgadmins", ", ".join(org.orgadmins)),
            ("users", org.users),
        ],
    )


@app.command("add")
@handle_errors
def add_cmd(name: OrgArg, details: DetailsOpt = None, registration: RegistrationOpt = None) -> None:
    """A new organisation (no self-registrations unless --registration)."""
    with db() as session:
        org = organisations.add_organisation(
            session, actor(session), name, details=details or "", registration=bool(registration)
        )
    say(f"organisation {org.name} added (self-registration: {_yes_no(org.allows_registration)})")


@app.command("list")
@handle_errors
def list_cmd() -> None:
    with read_db() as session:
        orgs = organisations.list_organisations(session, actor(session)).items
    rows = [
        (o.name, _yes_no(o.allows_registration), ", ".join(o.domains), ", ".join(o.orgadmins),
         o.users, o.details)
        for o in orgs
    ]  # fmt: skip
    columns = ["name", "registration", "security domains", "orgadmins", "users", "details"]
    print_table("Organisations", columns, rows)


@app.command("show")
@handle_errors
def show_cmd(name: OrgArg) -> None:
    """An organisation (admins: any; an orgadmin: their own)."""
    with read_db() as session:
        org = organisations.get_organisation(session, actor(session), name)
    _show(org)


@app.command("rename")
@handle_errors
def rename_cmd(name: OrgArg, new_name: Annotated[str, typer.Argument(help="new name")]) -> None:
    """Existing VMs keep their identities; new ones carry the new name."""
    with db() as session:
        org = organisations.rename_organisation(session, actor(session), name, new_name)
    say(f"organisation {name} is called {org.name} now")


@app.command("set")
@handle_errors
def set_cmd(name: OrgArg, registration: RegistrationOpt = None, details: DetailsOpt = None) -> None:
    """Whether it takes self-registrations, and its description."""
    with db() as session:
        org = organisations.set_organisation(
            session, actor(session), name, registration=registration, details=details
        )
    _show(org)


@app.command("domains")
@handle_errors
def domains_cmd(
    name: OrgArg,
    add: Annotated[list[str] | None, typer.Option("--add", help="give it this domain")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="take this domain back")
    ] = None,
) -> None:
    """The security domains it may use besides those visible to all."""
    with db() as session:
        org = organisations.set_domains(
            session, actor(session), name, add=add or (), remove=remove or ()
        )
    _show(org)
