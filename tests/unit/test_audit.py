"""The audit log: every guarded call that changes something leaves one entry in the
caller's transaction (none when it is rolled back), every refusal one of its own, calls
given an engine theirs at once; `baadal audit` shows each person their share of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, event, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import VM, AuditLog, User
from baadal.db.session import session_scope
from baadal.errors import ConflictError, PermissionDenied, ValidationError
from baadal.services import audit, monitoring, organisations, policy, vms
from baadal.services.policy import SYSTEM, Action, Actor, actor_for, guarded, require
from tests.unit.test_authorization import (
    world_engine,  # noqa: F401 - a fixture
    world_template,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.unit


@pytest.fixture
def world(world_engine: tuple[Engine, Path]) -> Engine:  # noqa: F811 - the imported fixture
    """The matrix's world with an empty audit log (building it was audited)."""
    engine, _ = world_engine
    with session_scope(engine) as s:
        s.execute(delete(AuditLog))
    return engine


def entries(engine: Engine) -> list[AuditLog]:
    with session_scope(engine) as s:
        return list(s.scalars(select(AuditLog).order_by(AuditLog.id)))


def as_tuple(e: AuditLog) -> tuple[object, ...]:
    return (e.actor_name, e.function, e.action, e.target_type, e.target_name, e.detail, e.outcome)


def test_a_change_is_recorded_with_it_and_a_rollback_leaves_nothing(
    world: Engine,
) -> None:
    engine = world
    with Session(engine) as s:
        vms.operate(s, actor_for(s, "stu"), "web", "stop")
        s.rollback()
    assert entries(engine) == []
    with session_scope(engine) as s:
        vms.get_vm(s, actor_for(s, "stu"), "web")  # a read: no entry
        vms.operate(s, actor_for(s, "stu"), "web", "stop")
        web_id = s.scalar(select(VM.id))
    (entry,) = entries(engine)
    assert as_tuple(entry) == ("stu", "vms.operate", "VM_OPERATE", "vm", "web", "stop", "ok")
    assert (entry.target_id, entry.vm_id) == (web_id, web_id)
    assert entry.actor_id == actor_id_of(engine, "stu").user_id


def actor_id_of(engine: Engine, who: str) -> Actor:
    with Session(engine) as s:
        return actor_for(s, who)


def test_a_refusal_is_kept_although_the_door_rolls_back(
    world: Engine,
) -> None:
    """The door's transaction holds SQLite's write lock: the refusal waits for its end
    and is written then (not blocked for the busy timeout, not rolled back with it)."""
    engine = world
    started = time.monotonic()
    with pytest.raises(PermissionDenied), session_scope(engine) as s:
        vms.operate(s, actor_for(s, "eve"), "web", "stop")
    assert time.monotonic() - started < 5
    (entry,) = entries(engine)
    assert as_tuple(entry) == (
        "eve",
        "vms.operate",
        "VM_OPERATE",
        "vm",
        "web",
        None,
        "refused: eve may not " + Action.VM_OPERATE.description + " VM web",
    )
    with pytest.raises(PermissionDenied), Session(engine) as s:  # blocked: before any check
        vms.list_vms(s, actor_for(s, "blk"))
    assert entries(engine)[-1].outcome == "refused: blk is blocked or not approved: nothing allowed"


def test_an_object_made_or_named_by_the_call_is_its_target(
    world: Engine,
) -> None:
    engine = world
    with session_scope(engine) as s:
        organisations.add_organisation(s, SYSTEM, "IITD")
        organisations.rename_organisation(s, SYSTEM, "IITD", "IITD2")
        organisations.set_domains(s, SYSTEM, "IITD2", add=["research"])
        vms.add_vm_user(s, actor_for(s, "fac"), "web", "eve")
    assert [as_tuple(e)[:2] + as_tuple(e)[3:] for e in entries(engine)] == [
        ("system", "organisations.add_organisation", "organisation", "IITD", None, "ok"),
        ("system", "organisations.rename_organisation", "organisation", "IITD2", "IITD -> IITD2",
         "ok"),
        ("system", "organisations.set_domains", "organisation", "IITD2", "+research", "ok"),
        ("fac", "vms.add_vm_user", "vm", "web", "+eve", "ok"),
    ]  # fmt: skip


def test_the_entry_names_the_action_that_was_checked(world: Engine, settings: Settings) -> None:
    """A function of several actions: the one its check refused."""
    with pytest.raises(PermissionDenied), Session(world) as s:
        monitoring.fetch_rrd_data(s, actor_for(s, "stu"), settings, "controller", "", "day")
    with pytest.raises(PermissionDenied), Session(world) as s:
        monitoring.fetch_rrd_data(s, actor_for(s, "eve"), settings, "vm", "web", "day")
    assert [(e.actor_name, e.action) for e in entries(world)] == [
        ("stu", "MONITOR_CLOUD"),
        ("eve", "VM_READ"),
    ]


@pytest.fixture
def engine_functions() -> Iterator[dict[str, object]]:
    """Service functions that commit their own work (given an engine), and one calling
    another: registered for the test only."""

    @guarded(Action.HOST_MANAGE)
    def commits(engine: Engine, actor: Actor, name: str, fail: bool) -> str:
        with session_scope(engine) as s:
            organisations.add_organisation(s, actor, name)
        if fail:
            raise ConflictError("half done")
        return "done"

    @guarded(Action.VM_OPERATE)
    def outer(session: Session, actor: Actor) -> None:
        vm = vms.get_vm(session, actor, "web")
        require(session, actor, Action.VM_OPERATE, vm)
        organisations.add_organisation(session, actor, "INNER")  # names its organisation

    made = {"commits": commits, "outer": outer}
    yield made
    for func in made.values():
        name = f"{func.__module__}.{func.__qualname__}"
        policy.GUARDED.pop(name)
        policy.AUDITED.discard(name)


def test_a_function_given_an_engine_records_its_outcome_at_once(
    world: Engine,
    engine_functions: dict,
) -> None:
    engine = world
    commits = engine_functions["commits"]
    assert commits(engine, SYSTEM, "ONE", False) == "done"
    with pytest.raises(ConflictError):
        commits(engine, SYSTEM, "TWO", True)
    stu = actor_id_of(engine, "stu")
    with pytest.raises(PermissionDenied):
        commits(engine, stu, "THREE", False)
    # the call inside (add_organisation) is part of the outer one: one entry each
    assert [(e.function.rpartition(".")[2], e.outcome) for e in entries(engine)] == [
        ("commits", "ok"),
        ("commits", "failed: half done"),
        ("commits", "refused: stu may not " + Action.HOST_MANAGE.description),
    ]


def test_a_call_inside_another_is_one_entry(
    world: Engine,
    engine_functions: dict,
) -> None:
    engine = world
    with session_scope(engine) as s:
        engine_functions["outer"](s, SYSTEM)
    (entry,) = entries(engine)
    assert (entry.function.rpartition(".")[2], entry.target_name) == ("outer", "web")


def _log_some(engine: Engine) -> None:
    """stu stops web (organisation A), ob fails to, admin lists organisations."""
    with session_scope(engine) as s:
        vms.operate(s, actor_for(s, "stu"), "web", "stop")
    with pytest.raises(PermissionDenied), session_scope(engine) as s:
        vms.operate(s, actor_for(s, "ob"), "web", "stop")
    with session_scope(engine) as s:
        organisations.add_organisation(s, actor_for(s, "admin"), "IITD")


@pytest.mark.parametrize(
    ("who", "seen"),
    [
        ("admin", ["admin", "ob", "stu"]),
        ("oa", ["admin", "stu"]),  # organisation A's people
        ("ob", ["ob"]),
        ("stu", ["stu"]),
        ("eve", []),
    ],
)
def test_each_reads_their_share(
    world: Engine,
    who: str,
    seen: list[str],
) -> None:
    engine = world
    _log_some(engine)
    with Session(engine) as s:
        got = audit.list_entries(s, actor_for(s, who)).items
    assert sorted(e.actor_name for e in got) == seen


def test_below_admins_a_refusal_does_not_name_its_object(world: Engine) -> None:
    """ob was refused web: ob's own list, and an orgadmin's, must not tell its name."""
    _log_some(world)
    with Session(world) as s:
        for who, shows in [("admin", ("vm", "web")), ("ob", ("vm", None))]:
            (refusal,) = [
                e for e in audit.list_entries(s, actor_for(s, who)).items if e.actor_name == "ob"
            ]
            assert (refusal.target_type, refusal.target_name) == shows, who
            assert refusal.target_id is None or who == "admin"


def test_filters_limits_and_a_deleted_vm(
    world: Engine,
) -> None:
    engine = world
    _log_some(engine)
    with session_scope(engine) as s:
        web_id = s.scalar(select(VM.id))
        names = [e.actor_name for e in audit.list_entries(s, SYSTEM, vm="web").items]
        assert names == ["ob", "stu"]  # newest first; ob was refused, on this VM
        assert len(audit.list_entries(s, SYSTEM, vm=str(web_id)).items) == 2
        assert [e.function for e in audit.list_entries(s, SYSTEM, user="admin").items] == [
            "organisations.add_organisation"
        ]
        assert audit.list_entries(s, SYSTEM, since="2999-01-01").items == []
        assert len(audit.list_entries(s, SYSTEM, since="2000-01-01T00:00+05:30").items) == 3
        assert [e.actor_name for e in audit.list_entries(s, SYSTEM, limit=1).items] == ["admin"]
        s.execute(delete(VM))
    with Session(engine) as s:  # kept after the VM is gone, found by its name or id
        assert [e.actor_name for e in audit.list_entries(s, SYSTEM, vm="web").items] == [
            "ob",
            "stu",
        ]
        assert len(audit.list_entries(s, SYSTEM, vm=str(web_id)).items) == 2
        for kwargs, message in [
            ({"limit": 0}, "limit must be 1-1000"),
            ({"limit": 1001}, "limit must be 1-1000"),
            ({"since": "yesterday"}, "not an ISO date"),
            ({"user": ""}, "1-128 characters"),
            ({"vm": "web\n"}, "control characters"),
        ]:
            with pytest.raises(ValidationError, match=message):
                audit.list_entries(s, SYSTEM, **kwargs)


def test_the_list_is_one_query_however_long(
    world: Engine,
) -> None:
    engine = world
    for _ in range(10):
        with session_scope(engine) as s:
            vms.add_vm_user(s, actor_for(s, "fac"), "web", "eve")
            vms.remove_vm_user(s, actor_for(s, "fac"), "web", "eve")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with Session(engine) as s:
        oa = actor_for(s, "oa")
        statements.clear()
        got = audit.list_entries(s, oa, vm="web", limit=1000).items
    assert len(got) == 20
    assert len([q for q in statements if "audit_log" in q]) == 1, statements
    # and an indexed one: SQLite's plan for a person's or a VM's entries names its index
    for kwargs, index in [
        ({"user": "fac"}, "ix_audit_log_actor_name_id"),
        ({"vm": "1"}, "ix_audit_log_vm_id"),
    ]:
        assert index in _plan(engine, kwargs), kwargs


def _plan(engine: Engine, kwargs: dict[str, str]) -> str:
    seen: list[tuple[str, object]] = []

    def note(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if "FROM audit_log" in statement:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", note)
    with Session(engine) as s:
        audit.list_entries(s, SYSTEM, **kwargs)
    event.remove(engine, "before_cursor_execute", note)
    ((statement, params),) = seen
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    return " ".join(str(r[-1]) for r in rows)


def test_audit_from_the_cli(
    world: Engine,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    engine = world
    _log_some(engine)
    monkeypatch.setenv("BAADAL_DATABASE__URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr("baadal.cli.door._acting_as", None)  # restored afterwards
    get_settings.cache_clear()
    runner = CliRunner()
    shown = runner.invoke(app, ["audit", "--vm", "web"])
    assert shown.exit_code == 0 and "vms.operate" in shown.output and "stop" in shown.output
    mine = runner.invoke(app, ["--as", "ob", "audit"])
    assert mine.exit_code == 0 and "refused: ob may not" in mine.output
    assert "stu" not in mine.output
    bad = runner.invoke(app, ["audit", "--limit", "0"])
    assert bad.exit_code == 2 and "limit must be 1-1000" in bad.output
    # the failed CLI call above was refused nothing: only refusals and changes are kept
    assert len(entries(engine)) == 3


def test_entries_follow_the_transaction_on_both_databases(engine: Engine) -> None:
    """A change's entry commits and rolls back with it; a refusal's is written after the
    door's transaction whatever became of it (SQLite and PostgreSQL)."""
    with session_scope(engine) as s:
        s.add(User(username="ann"))
    with Session(engine) as s:
        organisations.add_organisation(s, SYSTEM, "GONE")
        s.rollback()
    with session_scope(engine) as s:
        organisations.add_organisation(s, SYSTEM, "KEPT")
    with pytest.raises(PermissionDenied), session_scope(engine) as s:
        s.execute(select(User.id)).all()  # the door's transaction is under way
        organisations.add_organisation(s, actor_for(s, "ann"), "NOPE")
    assert [(e.actor_name, e.target_name, e.outcome[:7]) for e in entries(engine)] == [
        ("system", "KEPT", "ok"),
        ("ann", None, "refused"),
    ]
