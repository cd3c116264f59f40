"""``baadal user register|approve|list|roles|block|unblock|passwd|login``: accounts and roles.

Passwords are asked for without echo (or read from standard input with --password-stdin),
never taken as arguments, where other users of the machine could read them.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy import select

from baadal import constants as C
from baadal.auth import roles, sessions, users
from baadal.cli.common import console, db, handle_errors, print_table
from baadal.config import get_settings
from baadal.db.models import User

app = typer.Typer(help="User accounts, approval and roles.", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="username")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)


def _state(user: User) -> str:
    if user.block_user:
        return "blocked"
    return {
        C.RegistrationKey.PENDING: "awaiting approval",
        C.RegistrationKey.DISABLED: "disabled",
    }.get(user.registration_key, "active")


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
    info = users.UserInfo(username, first, last, email or None, org or None)
    with db() as session:
        user = users.register_callback(session, get_settings(), info, password)
        state = _state(user)
    console.print(f"registered {username} ({state})", highlight=False)


@app.command("approve")
@handle_errors
def approve_cmd(username: UserArg) -> None:
    """Let a pending registration log in."""
    with db() as session:
        users.approve_user(session, username)
    console.print(f"{username} may log in now", highlight=False)


@app.command("list")
@handle_errors
def list_cmd() -> None:
    with db() as session:
        rows = [
            (
                u.username,
                f"{u.first_name} {u.last_name}".strip(),
                u.email or "",
                u.organisation.name if u.organisation else "",
                ", ".join(sorted(r.value for r in roles.user_roles(session, u.id))),
                _state(u),
            )
            for u in session.scalars(select(User).where(User.id >= 0).order_by(User.username))
        ]
    print_table("Users", ["username", "name", "e-mail", "organisation", "roles", "state"], rows)


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
        user = users.get_user(session, username)
        if set_roles:
            wanted = [roles.parse_role(name) for name in set_roles.split(",") if name.strip()]
            roles.add_or_update_user_memberships(session, user.id, wanted)
        have = sorted(r.value for r in roles.user_roles(session, user.id))
    console.print(f"{username}: {', '.join(have)}", highlight=False)


def _set_blocked(username: str, blocked: bool) -> None:
    with db() as session:
        users.set_blocked(session, username, blocked)
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
    """Set a local account's password."""
    password = _password(password_stdin, confirm=True)
    with db() as session:
        users.set_password(session, username, password)
    console.print(f"password of {username} changed", highlight=False)


@app.command("login")
@handle_errors
def login_cmd(username: UserArg, password_stdin: StdinOpt = False) -> None:
    """Check a login the way the portal does it (database or LDAP) and show the roles."""
    password = _password(password_stdin, confirm=False)
    settings = get_settings()
    with db() as session:
        user = sessions.login(session, settings, username, password)
        have = sorted(r.value for r in roles.user_roles(session, user.id))
    console.print(f"{username} logged in; roles: {', '.join(have)}", highlight=False)
