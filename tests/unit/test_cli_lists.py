"""The CLI's lists page as ``vm list`` does (``--limit N``, ``--after``/``--before ID``,
a ``more:`` line while more follow), and ``template list`` costs the same statements
for one template as for many."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sized
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import VM, ApiToken, Datastore, RequestQueue, Task, Template, User
from baadal.db.session import session_scope
from baadal.services import (
    inventory,
    networks,
    organisations,
    pools,
    tasks,
    tokens,
    users,
    vm_requests,
    vms,
)
from baadal.services.policy import SYSTEM
from tests.unit.test_authorization import world_engine, world_template  # noqa: F401

pytestmark = pytest.mark.unit

#: each list, how it pages (ascending ids: --after; newest first: --before) and what the
#: system administrator's service call lists
LISTS: dict[str, tuple[list[str], str, Callable[[Session], Sized]]] = {
    "host": (["host", "list"], "--after", lambda s: inventory.list_hosts(s, SYSTEM).items),
    "datastore": (
        ["datastore", "list"], "--after", lambda s: inventory.list_datastores(s, SYSTEM).items
    ),
    "template": (
        ["template", "list"], "--after", lambda s: inventory.list_templates(s, SYSTEM).items
    ),
    "user": (["user", "list"], "--after", lambda s: users.list_accounts(s, SYSTEM).items),
    "organisation": (
        ["org", "list"], "--after", lambda s: organisations.list_organisations(s, SYSTEM).items
    ),
    "security domain": (
        ["net", "domain", "list"], "--after",
        lambda s: networks.list_security_domains(s, SYSTEM).items,
    ),
    "token": (
        ["token", "list", "--user", "stu"], "--after",
        lambda s: tokens.list_tokens(s, SYSTEM, username="stu").items,
    ),
    "vm": (["vm", "list"], "--after", lambda s: vms.list_vms(s, SYSTEM)),
    "pool": (["pool", "list"], "--after", lambda s: pools.list_vlans(s, SYSTEM).items),
    "task": (
        ["task", "list"], "--before", lambda s: tasks.list_tasks(s, SYSTEM, limit=100).items
    ),
    "request": (
        ["request", "list"], "--before", lambda s: vm_requests.list_requests(s, SYSTEM).items
    ),
}  # fmt: skip
MORE = re.compile(r"more: (--after|--before) (\d+)")


@pytest.fixture
def cli(
    world_engine: tuple[Engine, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Engine]:
    """The authorization world with a second of everything the lists show, as the CLI's
    database."""
    engine, _ = world_engine
    with session_scope(engine) as s:
        stu = s.scalar(select(User.id).where(User.username == "stu"))
        ds = Datastore(ds_name="ds2", capacity=10, path="/x", system_mount_point="/mnt/ds2")
        s.add(ds)
        s.flush()
        web = s.scalar(select(VM).where(VM.vm_name == "web"))
        s.add(
            VM(vm_name="db", vm_identity="ORG_A_fac_db", RAM=256, vCPU=1, HDD=1,
               template_id=web.template_id, owner_id=web.owner_id, host_id=web.host_id,
               datastore_id=web.datastore_id, vnc_port=5902)
        )  # fmt: skip
        s.add(ApiToken(user_id=stu, name="t2", token_hash="1" * 64, prefix="bdl_1"))
        s.add(Task(task_type=C.TaskType.START_VM, requester_id=stu))
        s.add_all(
            RequestQueue(vm_name=f"r{i}", request_type="create", requester_id=stu) for i in range(2)
        )
    monkeypatch.setenv("BAADAL_DATABASE__URL", str(engine.url))
    get_settings.cache_clear()
    yield engine
    get_settings.cache_clear()


def _run(*argv: str) -> str:
    result = CliRunner().invoke(app, list(argv), terminal_width=250)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_list_pages_one_row_at_a_time(cli: Engine, name: str) -> None:
    argv, option, listed = LISTS[name]
    whole = _run(*argv)
    assert "more:" not in whole
    pages, start = [], []
    while True:
        page = _run(*argv, "--limit", "1", *start)
        pages.append(page)
        more = MORE.search(page)
        if more is None:
            break
        assert more.group(1) == option
        start = [option, more.group(2)]
        assert len(pages) <= 50
    assert len(pages) >= 2 and len(set(pages)) == len(pages)
    with session_scope(cli) as s:
        assert len(pages) == len(listed(s))


@pytest.mark.parametrize("name", sorted(LISTS))
def test_bad_page_values_are_one_line_exit_2(cli: Engine, name: str) -> None:
    argv, option, _ = LISTS[name]
    for bad in (["--limit", "0"], ["--limit", "x"], [option, "-1"], [option, "99999999999"]):
        result = CliRunner().invoke(app, [*argv, *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "Traceback" not in result.output
    assert "more:" not in _run(*argv, option, "99999")  # past the end: an empty page


def test_template_list_statements_do_not_grow(cli: Engine) -> None:
    """Each template's datastore comes with it (a query per row would grow here)."""
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    def measured() -> int:
        statements.clear()
        event.listen(Engine, "before_cursor_execute", count)
        try:
            output = _run("template", "list")
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        assert "ds2" in output or "t0" not in output
        return len(statements)

    with session_scope(cli) as s:
        s.execute(Template.__table__.delete().where(Template.name == "private"))
    _run("template", "list")  # the first command's one-time reads (the schema's version)
    one = measured()
    with session_scope(cli) as s:
        ds2 = s.scalar(select(Datastore.id).where(Datastore.ds_name == "ds2"))
        s.add_all(
            Template(name=f"t{i}", os_version="1", hdd=1, hdfile="b.qcow2", datastore_id=ds2)
            for i in range(5)
        )
    assert measured() == one, "\n".join(statements)


def test_pool_list_shows_the_totals_on_the_first_page_only(cli: Engine) -> None:
    """Public addresses and VNC ports are one row each, not a VLAN's: the first page has
    them, the pages after it only VLANs."""
    first = _run("pool", "list", "--limit", "1")
    assert "public" in first and "VNC ports" in first
    more = MORE.search(first)
    assert more is not None
    second = _run("pool", "list", "--limit", "1", "--after", more.group(2))
    assert "VLAN " in second
    assert "public" not in second and "VNC ports" not in second
