"""``baadal user register|approve|list|roles|block|unblock|passwd|login|set-mail``: accounts,
roles and mail choices.

Passwords are asked for without echo (or read from standard input with --password-stdin),
never taken as arguments, where other users of the machine could read them.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterable
from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    actor,
    checked_engine,
    console,
    db,
    handle_errors,
    print_table,
    prompt_secret,
    read_db,
    say,
)
from baadal.config import get_settings
from baadal.services import users

app = typer.Typer(help="User accounts, approval and roles.", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="username")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return prompt_secret("password", "--password-stdin", confirm=confirm)


def _names(roles: Iterable[C.Role]) -> str:
    return ", ".join(r.value for r in roles)


@app.command("register")
@handle_errors
def register_cmd(
    username: UserArg,
    email: Annotated[str, typer.Option(help="e-mail address")] = "",
    first: Annotated[str, typer.Option(help="first name")] = "",
    last: Annotated[str, typer.Option(help="last name")] = "",
    org: Annotated[str, typer.Option(help="organisation")] = "",
    password_stdin: StdinOpt = False,
) -> None:
    """A local account; it logs in once an admin approves it (see `user approve`)."""
    password = _password(password_stdin, confirm=True)
    with db() as session:
        account = users.register_self(
            session, get_settings(), username=username, password=password,
            email=email or None, first_name=first, last_name=last, organisation=org or None,
        )  # fmt: skip
    console.print(f"registered {username} ({account.state})", highlight=False)


@app.command("approve")
@handle_errors
def approve_cmd(username: UserArg) -> None:
    """Let a pending registration log in."""
    with db() as session:
        users.approve(session, actor(session), username)
    console.print(f"{username} may log in now", highlight=False)


@app.command("list")
@handle_errors
def list_cmd() -> None:
    """The accounts you may see (admins: all; orgadmins: their organisation's)."""
    with read_db() as session:
        accounts = users.list_accounts(session, actor(session)).items
    rows = [
        (
            a.username,
            a.name,
            a.email,
            a.organisation,
            _names(a.roles),
            a.state,
            "yes" if a.task_mails else "no",
        )
        for a in accounts
    ]
    columns = ["username", "name", "e-mail", "organisation", "roles", "state", "task mails"]
    print_table("Users", columns, rows)


@app.command("roles")
@handle_errors
def roles_cmd(
    username: UserArg,
    set_roles: Annotated[
        str, typer.Option("--set", help="comma-separated roles: admin, orgadmin, faculty, user")
    ] = "",
) -> None:
    """Show the user's roles, or make them exactly --set (user is always kept)."""
    with db() as session:
        who = actor(session)
        if set_roles:
            have = users.set_roles(session, who, username, set_roles.split(","))
        else:
            have = users.get_roles(session, who, username)
    console.print(f"{username}: {_names(have)}", highlight=False)


def _set_blocked(username: str, blocked: bool) -> None:
    with db() as session:
        users.set_blocked(session, actor(session), username, blocked)
    console.print(f"{username} is {'blocked' if blocked else 'unblocked'}", highlight=False)


@app.command("block")
@handle_errors
def block_cmd(username: UserArg) -> None:
    """Refuse the user's logins (their VMs are left alone)."""
    _set_blocked(username, True)


@app.command("unblock")
@handle_errors
def unblock_cmd(username: UserArg) -> None:
    _set_blocked(username, False)


@app.command("passwd")
@handle_errors
def passwd_cmd(username: UserArg, password_stdin: StdinOpt = False) -> None:
    """Set a local account's password (your own, or anyone's as an admin)."""
    password = _password(password_stdin, confirm=True)
    with db() as session:
        users.set_password(session, actor(session), username, password)
    console.print(f"password of {username} changed", highlight=False)


@app.command("login")
@handle_errors
def login_cmd(username: UserArg, password_stdin: StdinOpt = False) -> None:
    """Check a login the way the portal does it (database or LDAP) and show the roles."""
    password = _password(password_stdin, confirm=False)
    source = f"local user {getpass.getuser()}"  # failures of one OS account count together
    account = users.check_login(checked_engine(), get_settings(), username, password, source=source)
    console.print(f"{username} logged in; roles: {_names(account.roles)}", highlight=False)


@app.command("set-mail")
@handle_errors
def set_mail_cmd(
    username: UserArg,
    task_mails: Annotated[
        bool,
        typer.Option(
            "--task-mails/--no-task-mails",
            help="a mail when a task of one of their VMs ends (request and idle-VM mails"
            " always come)",
        ),
    ],
) -> None:
    """Whether the account gets a mail when a task of one of its VMs ends."""
    with db() as session:
        users.set_task_mails(session, actor(session), username, task_mails)
    say(f"{username}: task mails {'on' if task_mails else 'off'}")
