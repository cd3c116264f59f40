"""Who may call the operations services (hosts, cloud, tasks, users, pools, lab, system,
measurements, idle VMs): each guarded function x the eight actors of the authorization matrix.

The cases use the matrix's world and runner (tests/unit/test_authorization.py): a refusal
is PermissionDenied and changes no row or file. What would reach a real host, the lab or
the network is replaced by a stub that fails past the policy, so these tests check the
policy only, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings
from baadal.db.models import Task
from baadal.errors import BaadalError, PermissionDenied
from baadal.services import (
    cloud,
    hosts,
    idle_vms,
    lab,
    load_all,
    measurements,
    organisations,
    policy,
    pools,
    system,
    tasks,
    users,
    web_sessions,
)
from baadal.services.policy import actor_for
from tests.unit.test_authorization import (
    ADMIN,
    ANYONE,
    VM_USERS,
    Case,
    World,
    world_engine,  # noqa: F401 - a fixture
    world_template,  # noqa: F401 - a fixture
)
from tests.unit.test_authorization import test_matrix as run_case

pytestmark = pytest.mark.unit

#: the world's organisation A: its orgadmin, and everyone of it who is not blocked
ORG_A_ADMINS = frozenset({"admin", "oa"})


def _failed_task(w: World) -> int:
    return w.session.scalar(select(Task.id).where(Task.status == C.TaskStatus.FAILED))


CASES: dict[str, list[Case]] = {
    # hosts
    "hosts.hardware": [
        Case(lambda w: hosts.hardware(w.engine, w.actor, w.settings, "host1"), ADMIN)
    ],
    "hosts.usage": [
        Case(lambda w: hosts.usage(w.engine, w.actor, w.settings, "host1", 0.1), ADMIN)
    ],
    "hosts.domains": [Case(lambda w: hosts.domains(w.engine, w.actor, "host1"), ADMIN)],
    "hosts.events": [Case(lambda w: hosts.events(w.session, w.actor, "host1"), ADMIN)],
    "hosts.check_hosts": [Case(lambda w: hosts.check_hosts(w.engine, w.actor, w.settings), ADMIN)],
    "hosts.delete_orphan": [
        Case(lambda w: hosts.delete_orphan(w.engine, w.actor, "host1", "stray"), ADMIN)
    ],
    "hosts.respawn": [Case(lambda w: hosts.respawn(w.engine, w.actor, w.settings, "host1"), ADMIN)],
    "hosts.vm_sanity": [Case(lambda w: hosts.vm_sanity(w.engine, w.actor, w.settings), ADMIN)],
    "hosts.evacuate": [Case(lambda w: hosts.evacuate(w.session, w.actor, "host1"), ADMIN)],
    "hosts.start_maintenance": [
        Case(lambda w: hosts.start_maintenance(w.session, w.actor, "host1"), ADMIN)
    ],
    "hosts.shutdown_vms": [
        Case(lambda w: hosts.shutdown_vms(w.session, w.actor, ["host1"]), ADMIN)
    ],
    "hosts.bootup_vms": [Case(lambda w: hosts.bootup_vms(w.session, w.actor, ["host1"]), ADMIN)],
    "hosts.power_up": [
        Case(lambda w: hosts.power_up(w.engine, w.actor, w.settings, "host2"), ADMIN)
    ],
    "hosts.power_down": [
        Case(lambda w: hosts.power_down(w.engine, w.actor, w.settings, "host2"), ADMIN)
    ],
    "hosts.request_power": [
        Case(lambda w: hosts.request_power(w.session, w.actor, "host2", "cycle"), ADMIN)
    ],
    "hosts.power_auto": [Case(lambda w: hosts.power_auto(w.engine, w.actor, w.settings), ADMIN)],
    # the cloud
    "cloud.summary": [Case(lambda w: cloud.summary(w.session, w.actor), ADMIN)],
    "cloud.shutdown": [Case(lambda w: cloud.shutdown(w.session, w.actor), ADMIN)],
    "cloud.bootup": [Case(lambda w: cloud.bootup(w.session, w.actor), ADMIN)],
    "cloud.finish": [Case(lambda w: cloud.finish(w.session, w.actor, shutdown=True), ADMIN)],
    # tasks: the failed task was asked for by the student, of the VM 'web'
    "tasks.list_tasks": [Case(lambda w: tasks.list_tasks(w.session, w.actor), ANYONE)],
    "tasks.task_states": [
        Case(lambda w: tasks.task_states(w.session, w.actor, [_failed_task(w)]), ANYONE)
    ],
    "tasks.get_task": [
        Case(
            lambda w: tasks.get_task(w.session, w.actor, _failed_task(w)),
            frozenset({"admin", "oa", "fac", "stu", "col"}),
        )
    ],
    "tasks.task_history": [
        Case(
            lambda w: tasks.task_history(w.session, w.actor, _failed_task(w)),
            frozenset({"admin", "oa", "fac", "stu", "col"}),
        )
    ],
    "tasks.retry": [Case(lambda w: tasks.retry(w.session, w.actor, _failed_task(w)), ADMIN)],
    "tasks.ignore": [Case(lambda w: tasks.ignore(w.session, w.actor, _failed_task(w)), ADMIN)],
    "tasks.new_worker": [Case(lambda w: tasks.new_worker(w.engine, w.actor, w.settings), ADMIN)],
    "tasks.inline_runner": [
        Case(lambda w: tasks.inline_runner(w.engine, w.actor, w.settings, [1]), ADMIN)
    ],
    "tasks.restore_network": [
        Case(lambda w: tasks.restore_network(w.engine, w.actor, w.settings), ADMIN)
    ],
    # accounts: 'eve' is a plain user of organisation A, 'col' one of organisation B
    "users.list_accounts": [Case(lambda w: users.list_accounts(w.session, w.actor), ANYONE)],
    "web_sessions.list_sessions": [
        Case(lambda w: web_sessions.list_sessions(w.session, w.actor, w.settings), ANYONE),
        Case(
            lambda w: web_sessions.list_sessions(w.session, w.actor, w.settings, username="eve"),
            frozenset({"admin", "eve"}),
        ),
    ],
    "web_sessions.end_sessions": [
        Case(lambda w: web_sessions.end_sessions(w.session, w.actor, w.settings), ANYONE),
        Case(
            lambda w: web_sessions.end_sessions(w.session, w.actor, w.settings, username="eve"),
            frozenset({"admin", "eve"}),
        ),
    ],
    "users.get_roles": [
        Case(lambda w: users.get_roles(w.session, w.actor, "eve"), ORG_A_ADMINS | {"eve"}),
        Case(
            lambda w: users.get_roles(w.session, w.actor, "col"), frozenset({"admin", "ob", "col"})
        ),
    ],
    "users.set_roles": [
        Case(lambda w: users.set_roles(w.session, w.actor, "eve", ["faculty"]), ADMIN),
        Case(lambda w: users.set_roles(w.session, w.actor, w.actor.username, ["admin"]), ADMIN),
    ],
    "users.get_account": [
        Case(lambda w: users.get_account(w.session, w.actor, "eve"), ORG_A_ADMINS | {"eve"}),
        Case(
            lambda w: users.get_account(w.session, w.actor, "col"),
            frozenset({"admin", "ob", "col"}),
        ),
        Case(lambda w: users.get_account(w.session, w.actor, w.actor.username), ANYONE),
    ],
    "users.approve": [
        Case(lambda w: users.approve(w.session, w.actor, "eve"), ORG_A_ADMINS),
        Case(lambda w: users.approve(w.session, w.actor, "col"), frozenset({"admin", "ob"})),
    ],
    "users.set_blocked": [
        Case(lambda w: users.set_blocked(w.session, w.actor, "eve", True), ORG_A_ADMINS),
        Case(
            lambda w: users.set_blocked(w.session, w.actor, "col", True), frozenset({"admin", "ob"})
        ),
        # an orgadmin may not block an admin of their own organisation
        Case(lambda w: users.set_blocked(w.session, w.actor, "admin", True), ADMIN),
    ],
    "users.set_password": [
        Case(
            lambda w: users.set_password(w.session, w.actor, "eve", "a new password"),
            frozenset({"admin", "eve"}),
        ),
        Case(
            lambda w: users.set_password(w.session, w.actor, w.actor.username, "my new password"),
            ANYONE,
        ),
    ],
    "users.set_task_mails": [
        Case(
            lambda w: users.set_task_mails(w.session, w.actor, "eve", False),
            frozenset({"admin", "eve"}),
        ),
        Case(lambda w: users.set_task_mails(w.session, w.actor, w.actor.username, False), ANYONE),
    ],
    # pools
    "pools.add_vlan": [
        Case(lambda w: pools.add_vlan(w.session, w.actor, "v77", 77, "10.77.0.0/24"), ADMIN)
    ],
    "pools.add_private_ips": [
        Case(
            lambda w: pools.add_private_ips(
                w.session, w.actor, "vlan10", "10.99.10.100", "10.99.10.101"
            ),
            ADMIN,
        )
    ],
    "pools.add_public_ips": [
        Case(lambda w: pools.add_public_ips(w.session, w.actor, "192.0.2.50", "192.0.2.51"), ADMIN)
    ],
    "pools.remove_private_ips": [
        Case(
            lambda w: pools.remove_private_ips(w.session, w.actor, "10.99.10.59", "10.99.10.60"),
            ADMIN,
        )
    ],
    "pools.remove_public_ips": [
        Case(
            lambda w: pools.remove_public_ips(w.session, w.actor, "192.0.2.19", "192.0.2.20"), ADMIN
        )
    ],
    "pools.usage": [Case(lambda w: pools.usage(w.session, w.actor), ADMIN)],
    "pools.list_vlans": [Case(lambda w: pools.list_vlans(w.session, w.actor), ADMIN)],
    # measuring the cloud
    "measurements.collect": [
        Case(lambda w: measurements.collect(w.engine, w.actor, w.settings), ADMIN)
    ],
    "measurements.measure_network": [
        Case(lambda w: measurements.measure_network(w.engine, w.actor, w.settings), ADMIN)
    ],
    "measurements.request_network_measurement": [
        Case(lambda w: measurements.request_network_measurement(w.session, w.actor), ADMIN)
    ],
    "measurements.network_graph_file": [
        Case(lambda w: measurements.network_graph_file(w.actor, w.settings, "svg"), ADMIN)
    ],
    "measurements.metrics": [
        Case(lambda w: measurements.metrics(w.engine, w.actor, w.settings), ADMIN)
    ],
    "measurements.metrics_server": [
        Case(
            lambda w: measurements.metrics_server(w.engine, w.actor, w.settings, "127.0.0.1", 0),
            ADMIN,
        )
    ],
    # the lab and the schema
    "lab.build_guest": [Case(lambda w: lab.build_guest(w.settings, w.actor), ADMIN)],
    "lab.add_guest_template": [
        Case(
            lambda w: lab.add_guest_template(w.session, w.actor, w.settings, datastore="ds1"), ADMIN
        )
    ],
    "lab.up": [Case(lambda w: lab.up(w.engine, w.actor, w.settings), ADMIN)],
    "lab.down": [Case(lambda w: lab.down(w.engine, w.actor, w.settings), ADMIN)],
    "lab.status": [Case(lambda w: lab.status(w.settings, w.actor), ADMIN)],
    "lab.demo_accounts": [Case(lambda w: lab.demo_accounts(w.session, w.actor, w.settings), ADMIN)],
    "lab.wait_for_ping": [Case(lambda w: lab.wait_for_ping(w.engine, w.actor, "web", 0.1), ADMIN)],
    "system.schema_state": [Case(lambda w: system.schema_state(w.settings, w.actor), ADMIN)],
    "system.upgrade_schema": [Case(lambda w: system.upgrade_schema(w.settings, w.actor), ADMIN)],
    "system.stored_text_problems": [
        Case(lambda w: system.stored_text_problems(w.settings, w.actor), ADMIN)
    ],
    # idle VMs and load balancing
    "idle_vms.check": [
        Case(lambda w: idle_vms.check(w.engine, w.actor, w.settings, dry_run=True), ADMIN),
        Case(lambda w: idle_vms.check(w.engine, w.actor, w.settings, dry_run=False), ADMIN),
    ],
    "idle_vms.set_locked": [
        Case(lambda w: idle_vms.set_locked(w.session, w.actor, "web", True), ADMIN)
    ],
    # 'web' has no warning: its users get past the policy to "nothing to answer"
    "idle_vms.keep": [Case(lambda w: idle_vms.keep(w.session, w.actor, "web"), VM_USERS)],
    "hosts.balance": [
        Case(lambda w: hosts.balance(w.engine, w.actor, w.settings, dry_run=True), ADMIN),
        Case(lambda w: hosts.balance(w.engine, w.actor, w.settings, dry_run=False), ADMIN),
    ],
}

#: what would reach hosts, the lab, the network or the disk: stubs failing past the policy
STUBBED = {
    "baadal.host.health": ["host_status_sanity_check"],
    "baadal.host.resources": ["host_resource_details"],
    "baadal.host.usage": ["get_host_resources_usage"],
    "baadal.host.domains": ["get_host_domains", "delete_orphan_vm"],
    "baadal.host.respawn": ["respawn_dangling_vms"],
    "baadal.vm.sanity": ["vm_sanity_check"],
    "baadal.host.power": ["host_power_up", "host_power_down", "host_power_operation"],
    "baadal.host.network_graph": ["measure_network"],
    "baadal.monitor.rrd": ["update_all_rrds"],
    "baadal.monitor.prometheus": ["render_metrics", "metrics_server"],
    "baadal.lab.topology": ["up", "down", "status"],
    "baadal.services.lab": ["build_tiny_guest", "is_pingable"],
    "baadal.db.schema": ["upgrade", "schema_revisions"],
    "baadal.vm.network": ["restore_network"],
}


class Stubbed(BaadalError):
    """Raised where the real work would start: the call got past the policy."""


def _stub(*_args: object, **_kwargs: object) -> None:
    raise Stubbed("stubbed")


@pytest.fixture
def inert(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for module, names in STUBBED.items():
        for name in names:
            monkeypatch.setattr(f"{module}.{name}", _stub)
    yield


def _cases() -> list[tuple[str, int, Case]]:
    return [(name, i, case) for name, cases in CASES.items() for i, case in enumerate(cases)]


@pytest.mark.parametrize(
    ("name", "index", "case"), _cases(), ids=[f"{n}[{i}]" for n, i, _ in _cases()]
)
def test_ops_matrix(
    name: str,
    index: int,
    case: Case,
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    settings: Settings,
    inert: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_case(name, index, case, world_engine, settings, monkeypatch)


def test_every_operations_function_has_a_case() -> None:
    load_all()
    mine = {
        "cloud", "hosts", "idle_vms", "lab", "measurements", "pools", "system", "tasks", "users",
        "web_sessions",
    }  # fmt: skip
    guarded = {
        name.removeprefix("baadal.services.")
        for name in policy.GUARDED
        if name.split(".")[2] in mine
    }
    assert guarded == set(CASES)


# --- open to anyone: registration and login ------------------------------------------


def test_self_registration_waits_for_approval_and_grants_nothing(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    settings: Settings,
) -> None:
    engine, _ = world_engine
    settings.general.admin_uid = ["newcomer"]  # a name in the admin list gets no role here
    with Session(engine) as s:
        organisations.set_organisation(s, policy.SYSTEM, "ORG_A", registration=True)
        s.commit()
    with Session(engine) as s:
        assert organisations.registration_organisations(s) == ["ORG_A"]
        account = users.register_self(
            s, settings, username="newcomer", password="long enough", organisation="ORG_A"
        )
        s.commit()
    assert account.state == "awaiting approval"
    assert account.roles == (C.Role.USER,)
    with pytest.raises(BaadalError):
        users.check_login(engine, settings, "newcomer", "long enough")
    with Session(engine) as s:
        users.approve(s, actor_for(s, "oa"), "newcomer")
        s.commit()
    assert users.check_login(engine, settings, "newcomer", "long enough").state == "active"
    with pytest.raises(PermissionDenied):
        users.check_login(engine, settings, "newcomer", "wrong password")


# --- the CLI acts as --as ------------------------------------------------------------


def test_cli_commands_act_as_the_given_user(
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, _ = world_engine
    monkeypatch.setenv("BAADAL_DATABASE__URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setattr("baadal.cli.door._acting_as", None)  # restored afterwards
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    code, out = run("--as", "eve", "pool", "list")
    assert code == 2 and "eve may not" in out, out
    assert run("--as", "eve", "user", "roles", "stu")[0] == 2
    code, out = run("--as", "eve", "task", "list")
    assert code == 0 and "FAILED" not in out, out
    code, out = run("--as", "stu", "task", "list")
    assert code == 0 and "FAILED" in out, out
    assert run("--as", "stu", "task", "retry", "1")[0] == 2
    assert run("pool", "list")[0] == 0
