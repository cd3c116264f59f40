"""Who may call which service function: every guarded function x eight kinds of actor.

The actors, around one running VM 'web' of organisation A (owned on record by the faculty
member who approved it, requested by their student, shared with a collaborator of
organisation B): admin, orgadmin of A, orgadmin of B, the faculty approver, the student
(owner), the collaborator, an unrelated user of A, and a blocked account that would
otherwise be an admin and a user of the VM. A refusal must be PermissionDenied and leave
every row and file as it was, even if the door committed afterwards, but for exactly one
'refused' entry in the audit log.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy import func as sql_func
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.config import Settings
from baadal.db.models import (
    VM,
    ApiToken,
    AuditLog,
    Base,
    Organisation,
    SecurityDomainOrg,
    Snapshot,
    Task,
    Template,
    TemplateOwner,
    User,
    UserVMMap,
)
from baadal.db.session import make_engine, session_scope
from baadal.errors import BaadalError, PermissionDenied
from baadal.net import nat_box
from baadal.services import (
    audit,
    consoles,
    inventory,
    load_all,
    mails,
    monitoring,
    networks,
    organisations,
    policy,
    tokens,
    vms,
)
from baadal.services.policy import Action, Actor, actor_for, guarded
from tests.support.cloud import fake_host_uri, make_cloud
from tests.support.natbox import FakeNatBox

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ("admin", "oa", "ob", "fac", "stu", "col", "eve", "blk")
VM_USERS = frozenset({"admin", "oa", "fac", "stu", "col"})
ADMIN = frozenset({"admin"})
#: who may share 'web': its owner, the orgadmin of its organisation, admins
VM_OWNERS = frozenset({"admin", "oa", "fac"})
ANYONE = frozenset(ACTORS) - {"blk"}
STU_OR_ADMIN = frozenset({"admin", "stu"})


@dataclass
class World:
    engine: Engine
    settings: Settings
    session: Session
    actor: Actor
    root: Path


@dataclass(frozen=True)
class Case:
    call: Callable[[World], Any]
    allowed: frozenset[str]


def _web_id(world: World) -> int:
    return world.session.scalars(select(VM.id).where(VM.vm_name == "web")).one()


#: "module.function" -> the calls tried for it and who may make them
CASES: dict[str, list[Case]] = {
    # VMs
    "vms.request_vm": [
        Case(
            lambda w: vms.request_vm(
                w.session,
                w.actor,
                w.settings,
                vm_name="new",
                template="tiny",
                ram_mb=256,
                vcpus=1,
                security_domain="research",
            ),
            ADMIN,
        ),
    ],
    "vms.launch_existing_vm_image": [
        Case(
            lambda w: vms.launch_existing_vm_image(
                w.session,
                w.actor,
                w.settings,
                vm_name="old",
                template="tiny",
                datastore="ds1",
                ram_mb=256,
                vcpus=1,
            ),
            ADMIN,
        ),
    ],
    "vms.list_vms": [Case(lambda w: vms.list_vms(w.session, w.actor), ANYONE)],
    "vms.list_vm_page": [
        Case(lambda w: vms.list_vm_page(w.session, w.actor, owner="fac", limit=5), ANYONE)
    ],
    "vms.list_vm_page_json": [
        Case(lambda w: vms.list_vm_page_json(w.session, w.actor, ("id", "name"), limit=5), ANYONE)
    ],
    "vms.get_vm": [Case(lambda w: vms.get_vm(w.session, w.actor, "web"), VM_USERS)],
    "vms.list_snapshots": [Case(lambda w: vms.list_snapshots(w.session, w.actor, "web"), VM_USERS)],
    "vms.vm_summary": [
        Case(lambda w: vms.vm_summary(w.session, w.actor, "web"), VM_USERS),
        # by id: the policy's filter in the query, the lookup's refusal when it finds none
        Case(lambda w: vms.vm_summary(w.session, w.actor, _web_id(w)), VM_USERS),
    ],
    "vms.list_disks": [Case(lambda w: vms.list_disks(w.session, w.actor, "web"), VM_USERS)],
    "vms.operate": [
        Case(lambda w, op=op: vms.operate(w.session, w.actor, "web", op), VM_USERS)
        for op in vms.DIRECT_OPERATIONS
    ],
    "vms.request_snapshot": [
        Case(lambda w: vms.request_snapshot(w.session, w.actor, "web"), VM_USERS)
    ],
    "vms.request_revert": [
        Case(lambda w: vms.request_revert(w.session, w.actor, "web", "s1"), VM_USERS)
    ],
    "vms.request_delete_snapshot": [
        Case(lambda w: vms.request_delete_snapshot(w.session, w.actor, "web", "s1"), VM_USERS)
    ],
    "vms.request_attach_disk": [
        Case(lambda w: vms.request_attach_disk(w.session, w.actor, "web", 1), ADMIN)
    ],
    "vms.request_edit": [
        Case(lambda w: vms.request_edit(w.session, w.actor, "web", ram_mb=512), ADMIN)
    ],
    "vms.request_clone": [Case(lambda w: vms.request_clone(w.session, w.actor, "web", 1), ADMIN)],
    "vms.request_migrate": [
        Case(lambda w: vms.request_migrate(w.session, w.actor, "web", None, True), ADMIN),
        Case(lambda w: vms.request_migrate(w.session, w.actor, "web", "host2", True), ADMIN),
    ],
    "vms.grant_vnc_access": [
        Case(lambda w: vms.grant_vnc_access(w.engine, w.actor, w.settings, "web", 60), VM_USERS)
    ],
    "consoles.open_console": [
        Case(lambda w: consoles.open_console(w.engine, w.actor, w.settings, "web"), VM_USERS)
    ],
    # a VM's users and owner: 'web' is owned by fac (organisation A), eve is of A, ob of B
    "vms.list_vm_users": [Case(lambda w: vms.list_vm_users(w.session, w.actor, "web"), VM_USERS)],
    "vms.vm_details": [Case(lambda w: vms.vm_details(w.session, w.actor, "web"), VM_USERS)],
    "vms.set_snapshot_schedule": [
        Case(
            lambda w: vms.set_snapshot_schedule(w.session, w.actor, "web", {C.SnapshotType.DAILY}),
            VM_USERS,
        )
    ],
    "vms.add_vm_user": [
        Case(lambda w: vms.add_vm_user(w.session, w.actor, "web", "eve"), VM_OWNERS),
        Case(lambda w: vms.add_vm_user(w.session, w.actor, "web", "ob"), ADMIN),
    ],
    "vms.remove_vm_user": [
        Case(lambda w: vms.remove_vm_user(w.session, w.actor, "web", "col"), VM_OWNERS)
    ],
    "vms.transfer_ownership": [
        Case(lambda w: vms.transfer_ownership(w.session, w.actor, "web", "stu"), ADMIN)
    ],
    # organisations
    "organisations.add_organisation": [
        Case(lambda w: organisations.add_organisation(w.session, w.actor, "ORG_C"), ADMIN)
    ],
    "organisations.list_organisations": [
        Case(lambda w: organisations.list_organisations(w.session, w.actor), ADMIN)
    ],
    "organisations.get_organisation": [
        Case(
            lambda w: organisations.get_organisation(w.session, w.actor, "ORG_A"),
            frozenset({"admin", "oa"}),
        ),
        Case(
            lambda w: organisations.get_organisation(w.session, w.actor, "ORG_B"),
            frozenset({"admin", "ob"}),
        ),
    ],
    "organisations.rename_organisation": [
        Case(lambda w: organisations.rename_organisation(w.session, w.actor, "ORG_A", "A2"), ADMIN)
    ],
    "organisations.set_organisation": [
        Case(
            lambda w: organisations.set_organisation(
                w.session, w.actor, "ORG_A", registration=True
            ),
            ADMIN,
        )
    ],
    "organisations.set_domains": [
        Case(
            lambda w: organisations.set_domains(w.session, w.actor, "ORG_A", add=["hidden"]),
            ADMIN,
        )
    ],
    # the audit log: everyone reads (their share of) it
    "audit.list_entries": [Case(lambda w: audit.list_entries(w.session, w.actor), ANYONE)],
    # inventory
    "inventory.add_host": [
        Case(
            lambda w: inventory.add_host(
                w.session, w.actor, name="h9", address="10.0.0.9", cpus=1, ram_gb=1
            ),
            ADMIN,
        )
    ],
    "inventory.list_hosts": [Case(lambda w: inventory.list_hosts(w.session, w.actor), ADMIN)],
    "inventory.get_host": [Case(lambda w: inventory.get_host(w.session, w.actor, "host1"), ADMIN)],
    "inventory.set_host_status": [
        Case(lambda w: inventory.set_host_status(w.session, w.actor, "host2", "down"), ADMIN)
    ],
    "inventory.remove_host": [
        Case(lambda w: inventory.remove_host(w.session, w.actor, "host2"), ADMIN)
    ],
    "inventory.add_datastore": [
        Case(
            lambda w: inventory.add_datastore(
                w.session,
                w.actor,
                name="ds2",
                mount_point=str(w.root / "ds2"),
                capacity_gb=10,
                settings=w.settings,
            ),
            ADMIN,
        )
    ],
    "inventory.list_datastores": [
        Case(lambda w: inventory.list_datastores(w.session, w.actor), ADMIN)
    ],
    "inventory.get_datastore": [
        Case(lambda w: inventory.get_datastore(w.session, w.actor, "ds1"), ADMIN)
    ],
    "inventory.add_template": [
        Case(
            lambda w: inventory.add_template(
                w.session,
                w.actor,
                name="t2",
                datastore="ds1",
                hdfile="base.qcow2",
                os_version="1",
                hdd_gb=1,
                settings=w.settings,
            ),
            ADMIN,
        )
    ],
    "inventory.list_templates": [
        Case(lambda w: inventory.list_templates(w.session, w.actor), ANYONE)
    ],
    "inventory.get_template": [
        Case(lambda w: inventory.get_template(w.session, w.actor, "tiny"), ANYONE),
        Case(lambda w: inventory.get_template(w.session, w.actor, "private"), {"admin", "fac"}),
    ],
    "inventory.deactivate_template": [
        Case(lambda w: inventory.deactivate_template(w.session, w.actor, "tiny"), ADMIN)
    ],
    "inventory.settings_as_dict": [
        Case(lambda w: inventory.settings_as_dict(w.actor, w.settings), ADMIN)
    ],
    # networks
    "networks.add_security_domain": [
        Case(
            lambda w: networks.add_security_domain(
                w.session, w.actor, "lab2", vlan_tag=77, cidr="10.77.0.0/24"
            ),
            ADMIN,
        )
    ],
    "networks.remove_security_domain": [
        Case(lambda w: networks.remove_security_domain(w.session, w.actor, "hidden"), ADMIN)
    ],
    "networks.list_security_domains": [
        Case(lambda w: networks.list_security_domains(w.session, w.actor), ANYONE)
    ],
    "networks.dhcp_entries": [Case(lambda w: networks.dhcp_entries(w.actor, w.settings), ADMIN)],
    "networks.rebuild_dhcp": [
        Case(lambda w: networks.rebuild_dhcp(w.engine, w.actor, w.settings), ADMIN)
    ],
    "networks.nat_rules": [Case(lambda w: networks.nat_rules(w.actor, w.settings), ADMIN)],
    "networks.reapply_nat": [
        Case(lambda w: networks.reapply_nat(w.engine, w.actor, w.settings), ADMIN)
    ],
    "networks.clear_nat": [
        Case(lambda w: networks.clear_nat(w.engine, w.actor, w.settings), ADMIN)
    ],
    # API tokens: one's own; admins anyone's (the world has token 1, stu's)
    "tokens.create_token": [
        Case(lambda w: tokens.create_token(w.session, w.actor, username="stu"), STU_OR_ADMIN)
    ],
    "tokens.list_tokens": [
        Case(lambda w: tokens.list_tokens(w.session, w.actor, username="stu"), STU_OR_ADMIN)
    ],
    "tokens.revoke_token": [
        Case(lambda w: tokens.revoke_token(w.session, w.actor, 1), STU_OR_ADMIN)
    ],
    # mail
    "mails.list_outbox": [Case(lambda w: mails.list_outbox(w.session, w.actor), ADMIN)],
    "mails.retry_mail": [Case(lambda w: mails.retry_mail(w.session, w.actor, 1), ADMIN)],
    "mails.send_now": [Case(lambda w: mails.send_now(w.engine, w.actor, w.settings), ADMIN)],
    # monitoring
    "monitoring.fetch_rrd_data": [
        Case(
            lambda w: monitoring.fetch_rrd_data(w.session, w.actor, w.settings, "vm", "web", "day"),
            VM_USERS,
        ),
        Case(
            lambda w: monitoring.fetch_rrd_data(
                w.session, w.actor, w.settings, "host", "host1", "day"
            ),
            ADMIN,
        ),
    ],
    "monitoring.get_performance_graph": [
        Case(
            lambda w: monitoring.get_performance_graph(
                w.session, w.actor, w.settings, "vm", "web", "cpu", "day"
            ),
            VM_USERS,
        ),
        Case(
            lambda w: monitoring.get_performance_graph(
                w.session, w.actor, w.settings, "controller", "", "cpu", "day"
            ),
            ADMIN,
        ),
    ],
}


# --- the world ---------------------------------------------------------------------


def _user(s: Session, name: str, org: Organisation, *roles: C.Role, blocked: bool = False) -> User:
    user = User(username=name, organisation_id=org.id, block_user=blocked)
    s.add(user)
    s.flush()
    add_membership_db(s, user.id, (*roles, C.Role.USER))
    return user


def build_world(engine: Engine, settings: Settings, root: Path) -> None:
    cloud = make_cloud(engine, settings, root, [fake_host_uri(root, f"h{i}") for i in (1, 2)])
    with session_scope(engine) as s:
        org_a, org_b = Organisation(name="ORG_A"), Organisation(name="ORG_B")
        s.add_all([org_a, org_b])
        s.flush()
        users = {
            "admin": _user(s, "admin", org_a, C.Role.ADMIN),
            "oa": _user(s, "oa", org_a, C.Role.ORGADMIN),
            "ob": _user(s, "ob", org_b, C.Role.ORGADMIN),
            "fac": _user(s, "fac", org_a, C.Role.FACULTY),
            "stu": _user(s, "stu", org_a),
            "col": _user(s, "col", org_b),
            "eve": _user(s, "eve", org_a),
            "blk": _user(s, "blk", org_a, C.Role.ADMIN, blocked=True),
        }
        vm = VM(
            vm_name="web",
            vm_identity="ORG_A_fac_web",
            RAM=256,
            vCPU=1,
            HDD=1,
            template_id=cloud.template_id,
            owner_id=users["fac"].id,
            requester_id=users["stu"].id,
            host_id=cloud.host_ids[0],
            datastore_id=cloud.datastore_id,
            vnc_port=5901,
            status=C.VMStatus.RUNNING,
        )
        s.add(vm)
        s.flush()
        for name in ("fac", "stu", "col", "blk"):
            s.add(UserVMMap(user_id=users[name].id, vm_id=vm.id))
        s.add(ApiToken(user_id=users["stu"].id, name="t", token_hash="0" * 64, prefix="bdl_0"))
        s.add(Snapshot(vm_id=vm.id, datastore_id=cloud.datastore_id, snapshot_name="s1", type=101))
        s.add(
            Task(
                task_type=C.TaskType.START_VM,
                vm_id=vm.id,
                requester_id=users["stu"].id,
                status=C.TaskStatus.FAILED,
                message="failed",
            )
        )
        private = Template(
            name="private",
            os_version="1",
            hdd=1,
            hdfile="base.qcow2",
            datastore_id=cloud.datastore_id,
        )
        s.add(private)
        s.flush()
        s.add(TemplateOwner(template_id=private.id, user_id=users["fac"].id))
        vlan_domain = networks.add_security_domain(
            s, policy.SYSTEM, "hidden", vlan_tag=55, cidr="10.55.0.0/24", visible_to_all=False
        )
        s.add(SecurityDomainOrg(security_domain_id=vlan_domain.id, organisation_id=org_b.id))


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The world built once: its database file and its directory tree."""
    from baadal.config import load_settings
    from baadal.db.schema import upgrade

    root = tmp_path_factory.mktemp("world")
    db = root / "world.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    settings = load_settings()
    build_world(engine, settings, root)
    engine.dispose()
    yield root, db


@pytest.fixture
def world_engine(
    world_template: tuple[Path, Path], tmp_path: Path, settings: Settings
) -> Iterator[tuple[Engine, Path]]:
    root, db = world_template
    copy = tmp_path / "world"
    shutil.copytree(root, copy, symlinks=True)
    engine = make_engine(f"sqlite:///{copy / db.name}")
    yield engine, copy
    engine.dispose()


def fingerprint(engine: Engine, root: Path) -> str:
    """Every row of every table and every file's name and size under the world's root,
    but the audit log (a refusal is written there: :func:`refusals` counts them)."""
    digest = hashlib.sha256()
    with session_scope(engine) as s:
        for table in Base.metadata.sorted_tables:
            if table.name == AuditLog.__tablename__:
                continue
            for row in s.execute(select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
    for path in sorted(root.rglob("*")):
        if path.suffix in (".db", ".db-wal", ".db-shm") or path.name.endswith(("-wal", "-shm")):
            continue
        digest.update(f"{path.relative_to(root)}:{path.is_file() and path.stat().st_size}".encode())
    return digest.hexdigest()


def refusals(engine: Engine, who: str) -> int:
    with session_scope(engine) as s:
        query = select(sql_func.count()).where(
            AuditLog.actor_name == who, AuditLog.outcome.startswith("refused: ")
        )
        return s.scalar(query) or 0


def _cases() -> list[tuple[str, int, Case]]:
    return [(name, i, case) for name, cases in CASES.items() for i, case in enumerate(cases)]


@pytest.mark.parametrize(
    ("name", "index", "case"), _cases(), ids=[f"{n}[{i}]" for n, i, _ in _cases()]
)
def test_matrix(
    name: str,
    index: int,
    case: Case,
    world_engine: tuple[Engine, Path],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, root = world_engine
    # a NAT box (in memory) that every NAT change goes to: a refusal must leave its rules
    box = FakeNatBox()
    monkeypatch.setattr(nat_box, "execute_remote_cmd", box)
    settings.nat.nat_type = C.NatType.SOFTWARE
    settings.nat.nat_ip = "10.99.0.2"
    settings.nat.public_interface = "pub0"
    # functions given only the settings audit into the settings' database: the world's
    settings.database.url = engine.url.render_as_string(hide_password=False)
    refused, allowed = [], []
    for who in ACTORS:
        before = fingerprint(engine, root)
        refused_before = refusals(engine, who)
        nat_before = box.state()
        with Session(engine) as session:
            actor = actor_for(session, who)
        with Session(engine) as session:
            world = World(engine, settings, session, actor, root)
            try:
                case.call(world)
            except PermissionDenied as exc:
                assert str(exc).startswith(who), str(exc)
                assert "\n" not in str(exc)
                session.commit()  # a careless door commits: still nothing may have changed
                assert fingerprint(engine, root) == before, f"{who}: refused but changed state"
                assert box.state() == nat_before, f"{who}: refused but changed the NAT box"
                assert refusals(engine, who) == refused_before + 1, f"{who}: refusal not audited"
                refused.append(who)
                continue
            except BaadalError:
                pass  # allowed past the policy; this world may lack what the call needs
            session.rollback()
        allowed.append(who)
    assert set(allowed) == set(case.allowed), f"{name}[{index}]: allowed {allowed}"


# --- every service function has a rule and a case ------------------------------------

NOT_SERVICES = {"policy", "lookup", "runtime", "rows", "auditing", "vm_rules"}


def _public_functions() -> dict[str, Callable[..., Any]]:
    load_all()
    found = {}
    for path in sorted((ROOT / "src/baadal/services").glob("*.py")):
        module_name = path.stem
        if module_name.startswith("_") or module_name in NOT_SERVICES:
            continue
        module = __import__(f"baadal.services.{module_name}", fromlist=["*"])
        for name, func in vars(module).items():
            if (
                inspect.isfunction(func)
                and not name.startswith("_")
                and func.__module__ == module.__name__
            ):
                found[f"{module_name}.{name}"] = func
    return found


def _touches_state(func: Callable[..., Any]) -> bool:
    """A function that is given the database, an engine or an actor reads or changes
    something a person may not be allowed to see or change."""
    params = inspect.signature(inspect.unwrap(func)).parameters
    return bool({"session", "engine", "actor"} & set(params))


def test_every_service_function_is_guarded_and_tried() -> None:
    functions = _public_functions()
    guarded_names = {n.removeprefix("baadal.services.") for n in policy.GUARDED}
    unguarded = [
        n
        for n, f in functions.items()
        if _touches_state(f)
        and n not in guarded_names
        and f"baadal.services.{n}" not in policy.OPEN
    ]
    assert not unguarded, f"service functions without a policy rule: {unguarded}"
    # the operations services' cases run in their own module (same world, same runner)
    from tests.unit.test_requests_policy import CASES as REQUEST_CASES
    from tests.unit.test_services_policy_ops import CASES as OPS_CASES

    untried = sorted(guarded_names - set(CASES) - set(OPS_CASES) - set(REQUEST_CASES))
    assert not untried, f"guarded functions without a case in the matrix: {untried}"
    assert set(CASES) <= guarded_names, sorted(set(CASES) - guarded_names)
    for action in Action:
        assert action in policy.RULES, action


def test_docs_table_matches_the_code() -> None:
    doc = (ROOT / "docs/authorization.md").read_text()
    assert doc == policy.authorization_markdown(), (
        "docs/authorization.md is stale: python -m baadal.services.policy > docs/authorization.md"
    )


# --- lists follow the same rules -----------------------------------------------------


@pytest.mark.parametrize(
    ("who", "sees_web"),
    [(w, w in VM_USERS) for w in ACTORS if w != "blk"],
)
def test_vm_list_is_filtered(world_engine: tuple[Engine, Path], who: str, sees_web: bool) -> None:
    engine, _ = world_engine
    with Session(engine) as s:
        names = [vm.name for vm in vms.list_vms(s, actor_for(s, who))]
    assert names == (["web"] if sees_web else [])


def test_templates_and_domains_are_filtered(world_engine: tuple[Engine, Path]) -> None:
    engine, _ = world_engine
    with Session(engine) as s:
        for who, templates, domains in [
            ("admin", ["private", "tiny"], ["hidden", "research"]),
            ("fac", ["private", "tiny"], ["research"]),
            ("stu", ["tiny"], ["research"]),
            ("col", ["tiny"], ["hidden", "research"]),
        ]:
            actor = actor_for(s, who)
            shown = inventory.list_templates(s, actor).items
            assert sorted(t.name for t in shown) == templates, who
            shown_domains = networks.list_security_domains(s, actor).items
            assert sorted(d.name for d in shown_domains) == domains, who


def test_a_user_may_not_create_for_someone_else_or_choose_the_host(
    world_engine: tuple[Engine, Path], settings: Settings
) -> None:
    """The three holes the issue found: another owner, --host, another's console."""
    engine, root = world_engine
    before = fingerprint(engine, root)
    with Session(engine) as s:
        stu, eve = actor_for(s, "stu"), actor_for(s, "eve")
    with Session(engine) as s:
        for kw in ({"owner": "eve"}, {"host": "host1"}):
            with pytest.raises(PermissionDenied):
                vms.request_vm(
                    s, stu, settings, vm_name="x", template="tiny", ram_mb=256, vcpus=1, **kw
                )
        s.commit()
    with pytest.raises(PermissionDenied):
        vms.grant_vnc_access(engine, eve, settings, "web")
    assert fingerprint(engine, root) == before


# --- the checks cannot be forgotten ----------------------------------------------------


def test_a_guarded_function_that_skips_its_check_fails() -> None:
    @guarded(Action.VM_READ)
    def forgetful(session: Session, actor: Actor) -> str:
        return "secret"

    with pytest.raises(RuntimeError, match="did not check VM_READ"):
        forgetful(None, policy.SYSTEM)
    with pytest.raises(TypeError, match="needs an Actor"):
        forgetful(None, "system")
    policy.GUARDED.pop(f"{__name__}.{forgetful.__qualname__}")


def test_blocked_and_pending_accounts_may_do_nothing(world_engine: tuple[Engine, Path]) -> None:
    engine, _ = world_engine
    with Session(engine) as s:
        blk = actor_for(s, "blk")
        assert blk.blocked and blk.is_admin
        for action in Action:
            assert policy.scope_of(blk, action) == policy.Scope.NONE
        s.get(User, actor_for(s, "eve").user_id).registration_key = C.RegistrationKey.PENDING
        assert actor_for(s, "eve").blocked


# --- the CLI acts as --as ------------------------------------------------------------


def test_cli_as_user_sees_only_their_vms(
    world_engine: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from baadal.cli.main import app
    from baadal.config import get_settings

    engine, _ = world_engine
    monkeypatch.setenv("BAADAL_DATABASE__URL", str(engine.url))
    get_settings.cache_clear()
    runner = CliRunner()
    mine = runner.invoke(app, ["--as", "stu", "vm", "list"], terminal_width=200)
    assert mine.exit_code == 0, mine.output
    assert "ORG_A_fac_web" in mine.output
    other = runner.invoke(app, ["--as", "eve", "vm", "list"], terminal_width=200)
    assert other.exit_code == 0 and "ORG_A_fac_web" not in other.output
    admin = runner.invoke(app, ["vm", "list"], terminal_width=200)
    assert "ORG_A_fac_web" in admin.output
    refused = runner.invoke(app, ["--as", "eve", "vm", "stop", "web", "--no-wait"])
    assert refused.exit_code == 2
    assert refused.output.strip() == "error: eve may not " + Action.VM_OPERATE.description + (
        " VM web"
    )
    unknown = runner.invoke(app, ["--as", "nobody", "vm", "list"])
    assert unknown.exit_code == 2 and "no user named 'nobody'" in unknown.output
