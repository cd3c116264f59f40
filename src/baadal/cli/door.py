"""What every CLI command shares: one-line errors with exit code 2, sessions, tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.errors import BaadalError
from baadal.logs import log_exception
from baadal.services import runtime
from baadal.services.policy import SYSTEM, Actor, actor_for
from baadal.services.rows import Page

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


class _LazyConsole:
    """A Rich console made at its first use: a command that prints only plain lines and
    tables (a list longer than C.CLI_RICH_TABLE_MAX_ROWS) does not import Rich."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    # Rich's progress bars use the console they are given as a context manager, which
    # Python looks up on the type, not through __getattr__
    def __enter__(self) -> Console:
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


console = cast("Console", _LazyConsole())
err_console = cast("Console", _LazyConsole(stderr=True))
EXIT_USER_ERROR = 2


def fail(message: str) -> typer.Exit:
    """Print one clear line on stderr and return the exit to raise; the message is text,
    never Rich markup (``[network] x`` in a message, or a name someone typed, stays as is)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def handle_errors(func: F) -> F:
    """Turn BaadalError into one line + exit 2; anything else is logged, not dumped."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BaadalError as exc:
            raise fail(str(exc)) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a bug: keep the traceback in the log, not on screen
            log_exception(f"unexpected error in {func.__name__}")
            raise fail(f"internal error ({type(exc).__name__}); see the baadal log") from None

    return wrapper  # type: ignore[return-value]


def has_terminal() -> bool:
    """Whether someone can answer a prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def prompt_secret(what: str, option: str, *, confirm: bool = False) -> str:
    """Ask for a secret without echo. Without a terminal nobody can answer (a script, a
    pipe, cron): say which option gives it instead of waiting or failing obscurely."""
    if not has_terminal():
        raise fail(f"no terminal to ask for the {what}: give it with {option}")
    try:
        return typer.prompt(what.capitalize(), hide_input=True, confirmation_prompt=confirm)
    except typer.Abort:  # Ctrl-C or end of input at the prompt
        raise fail(f"no {what} given") from None


def checked_engine() -> Engine:
    return runtime.checked_engine()


@contextmanager
def db() -> Iterator[Session]:
    with runtime.transaction() as session:
        yield session


@contextmanager
def read_db() -> Iterator[Session]:
    """For commands that only read: they never make a write wait (see runtime)."""
    with runtime.read_transaction() as session:
        yield session


#: the username given with the global --as option; None acts as the system administrator
_acting_as: str | None = None


def act_as(username: str | None) -> None:
    global _acting_as
    _acting_as = username


def actor(session: Session) -> Actor:
    """Who this command acts for: the system administrator, or the --as user."""
    return actor_for(session, _acting_as)


def current_actor() -> Actor:
    """:func:`actor` read in a short session of its own, for commands whose services
    open their own (engine-based) or need no schema yet: the system administrator needs
    no database at all."""
    if _acting_as is None:
        return SYSTEM
    with db() as session:
        return actor(session)


HostArg = Annotated[str, typer.Argument(help="host name or id")]

#: the list commands' paging: without --limit a list is all of it, in id order
LimitOption = Annotated[
    int | None, typer.Option(min=1, max=C.API_PAGE_MAX, help="show one page of this many")
]
AfterOption = Annotated[
    int | None, typer.Option(min=0, help="start after this id (the 'more:' line gives it)")
]
#: the newest-first lists (tasks, requests) page downwards
BeforeOption = Annotated[
    int | None, typer.Option(min=1, help="start below this id (the 'more:' line gives it)")
]


#: control characters shown as '?' in plain tables (a name must not move the cursor)
_UNPRINTABLE = {code: "?" for code in [*range(32), 127]}


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """The table as aligned plain text, two spaces between columns."""
    cells = [[c.translate(_UNPRINTABLE) for c in columns]]
    cells += [["" if v is None else str(v).translate(_UNPRINTABLE) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    cells.insert(1, ["-" * w for w in widths])
    lines = [title.translate(_UNPRINTABLE)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
              for line in cells]  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Rich table, or plain text past C.CLI_RICH_TABLE_MAX_ROWS rows (fast to print,
    easy to grep)."""
    if len(rows) > C.CLI_RICH_TABLE_MAX_ROWS:
        _plain_table(title, columns, rows)
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def say(message: str) -> None:
    """One plain line on stdout (no Rich markup: names may hold brackets)."""
    console.print(message, highlight=False, markup=False)


def print_more(page: Page[Any], option: str = "--after") -> None:
    """Where the next page starts, when there is one (the same line in every list)."""
    if page.next is not None:
        sys.stdout.write(f"more: {option} {page.next}\n")


def print_fields(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    """One object, one field per row."""
    print_table(title, ["field", "value"], rows)
