"""``baadal token create|list|revoke``: personal API tokens (``Authorization: Bearer``).
With the global ``--as USER`` the tokens are that user's; ``--user`` names someone else's
(admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    AfterOption,
    LimitOption,
    actor,
    db,
    handle_errors,
    print_more,
    print_table,
    read_db,
    say,
)
from baadal.services import tokens

app = typer.Typer(help="Personal API tokens: create, list, revoke.", no_args_is_help=True)

UserOption = Annotated[
    str | None,
    typer.Option("--user", metavar="USERNAME", help="whose tokens (admins); default: your own"),
]


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""  # type: ignore[attr-defined]


@app.command("create")
@handle_errors
def create_cmd(
    name: Annotated[str, typer.Option(help="what the token is for")] = "api",
    expires_days: Annotated[
        int | None, typer.Option(min=1, max=C.API_TOKEN_DAYS_MAX, help="valid this many days")
    ] = None,
    user: UserOption = None,
) -> None:
    """Make a token; it is printed once, alone on the last line (keep it: only its hash
    is stored)."""
    with db() as session:
        new = tokens.create_token(
            session, actor(session), username=user, name=name, expires_days=expires_days
        )
    info = new.info
    until = f"until {_when(info.expires)}" if info.expires else "until revoked"
    say(f"token {info.id} ({info.name}) for {info.username}, valid {until}:")
    say(new.token)


@app.command("list")
@handle_errors
def list_cmd(user: UserOption = None, limit: LimitOption = None, after: AfterOption = None) -> None:
    """The tokens, revoked and expired ones too (never the tokens themselves)."""
    with read_db() as session:
        page = tokens.list_tokens(
            session, actor(session), username=user, after=after, limit=limit or C.API_PAGE_MAX
        )
        found = page.items
    rows = [
        (
            t.id,
            t.name,
            f"{t.prefix}...",
            _when(t.created),
            _when(t.expires),
            _when(t.last_used),
            "active" if t.active else "revoked" if t.revoked else "expired",
        )
        for t in found
    ]
    columns = ["id", "name", "token", "created", "expires", "last used", "state"]
    print_table(f"API tokens of {found[0].username}" if found else "API tokens", columns, rows)
    print_more(page)


@app.command("revoke")
@handle_errors
def revoke_cmd(
    token_id: Annotated[int, typer.Argument(help="the token's id (token list)")],
) -> None:
    """The token stops working at once."""
    with db() as session:
        info = tokens.revoke_token(session, actor(session), token_id)
    say(f"token {info.id} ({info.name}) of {info.username} revoked")
