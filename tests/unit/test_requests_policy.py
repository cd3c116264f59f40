"""Who may call the request and quota services: each guarded function x the eight actors
of the authorization matrix (tests/unit/test_authorization.py), in its world plus three
requests of the student 'stu' naming the faculty member 'fac' as approver, with 'col' as
collaborator: 1 REQUESTED, 2 VERIFIED, 3 APPROVED. A refusal changes no row or file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import RequestCollaborator, RequestQueue, SecurityDomain, Template, User
from baadal.db.session import make_engine, session_scope
from baadal.services import quotas, vm_requests
from tests.unit.test_authorization import (
    ADMIN,
    ANYONE,
    VM_USERS,
    Case,
    build_world,
    world_engine,  # noqa: F401 - a fixture
)
from tests.unit.test_authorization import test_matrix as run_case

pytestmark = pytest.mark.unit

#: those a request of stu's (approver fac, collaborator col) concerns, and org A's admins
REQUEST_PEOPLE = frozenset({"admin", "oa", "fac", "stu", "col"})

CASES: dict[str, list[Case]] = {
    "vm_requests.check_approver": [
        Case(lambda w: vm_requests.check_approver(w.session, w.actor, "fac"), ANYONE)
    ],
    "vm_requests.request_create": [
        Case(
            lambda w: vm_requests.request_create(
                w.session,
                w.actor,
                w.settings,
                vm_name="x",
                template="tiny",
                approver="fac",
                security_domain="research",
            ),
            ANYONE,
        )
    ],
    "vm_requests.request_clone": [
        Case(
            lambda w: vm_requests.request_clone(
                w.session, w.actor, w.settings, "web", 1, approver="fac"
            ),
            VM_USERS,
        )
    ],
    "vm_requests.request_disk": [
        Case(
            lambda w: vm_requests.request_disk(
                w.session, w.actor, w.settings, "web", 1, approver="fac"
            ),
            VM_USERS,
        )
    ],
    "vm_requests.request_edit": [
        Case(
            lambda w: vm_requests.request_edit(
                w.session, w.actor, w.settings, "web", ram_mb=512, approver="fac"
            ),
            VM_USERS,
        )
    ],
    "vm_requests.list_requests": [
        Case(lambda w: vm_requests.list_requests(w.session, w.actor), ANYONE)
    ],
    "vm_requests.get_request": [
        Case(lambda w: vm_requests.get_request(w.session, w.actor, 1), REQUEST_PEOPLE)
    ],
    "vm_requests.verify_request": [
        Case(lambda w: vm_requests.verify_request(w.session, w.actor, 1), {"admin", "fac"})
    ],
    "vm_requests.approve_request": [
        Case(
            lambda w: vm_requests.approve_request(w.session, w.actor, w.settings, 2),
            {"admin", "oa"},
        ),
        Case(
            lambda w: vm_requests.approve_request(w.session, w.actor, w.settings, 3),
            {"admin", "oa"},  # oa: past the policy, then "waits for an admin's approval"
        ),
    ],
    "vm_requests.reject_request": [
        Case(
            lambda w: vm_requests.reject_request(w.session, w.actor, 1, "no"),
            {"admin", "oa", "fac"},
        )
    ],
    "vm_requests.edit_request": [
        Case(
            lambda w: vm_requests.edit_request(w.session, w.actor, w.settings, 1, ram_mb=512),
            {"admin", "oa", "fac", "stu"},
        )
    ],
    "vm_requests.remind_request": [
        Case(lambda w: vm_requests.remind_request(w.session, w.actor, 1), REQUEST_PEOPLE)
    ],
    "vm_requests.withdraw_request": [
        Case(lambda w: vm_requests.withdraw_request(w.session, w.actor, 1), {"stu"})
    ],
    "quotas.show_quota": [
        Case(lambda w: quotas.show_quota(w.session, w.actor, w.settings), ANYONE),
        Case(
            lambda w: quotas.show_quota(w.session, w.actor, w.settings, user="stu"),
            {"admin", "oa", "stu"},
        ),
        Case(
            lambda w: quotas.show_quota(w.session, w.actor, w.settings, org="ORG_A"),
            {"admin", "oa", "fac", "stu", "eve"},
        ),
    ],
    "quotas.set_quota": [
        Case(
            lambda w: quotas.set_quota(w.session, w.actor, user="stu", limits={C.QuotaItem.VMS: 1}),
            ADMIN,
        )
    ],
}


def add_requests(engine: Engine) -> None:
    with session_scope(engine) as s:
        ids = {u.username: u.id for u in s.scalars(select(User))}
        template = s.scalar(select(Template.id).where(Template.name == "tiny"))
        domain = s.scalar(select(SecurityDomain.id).where(SecurityDomain.name == "research"))
        for i, status in enumerate(
            (C.RequestStatus.REQUESTED, C.RequestStatus.VERIFIED, C.RequestStatus.APPROVED),
            start=1,
        ):
            s.add(
                RequestQueue(
                    id=i,
                    request_type=C.RequestKind.CREATE,
                    vm_name=f"new{i}",
                    template_id=template,
                    RAM=256,
                    vCPU=1,
                    HDD=1,
                    security_domain_id=domain,
                    requester_id=ids["stu"],
                    owner_id=ids["fac"],
                    approver_id=ids["fac"],
                    status=status,
                )
            )
            s.flush()
            s.add(RequestCollaborator(request_id=i, user_id=ids["col"]))


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The matrix's world with the three requests (overrides its fixture here)."""
    from baadal.config import load_settings
    from baadal.db.schema import upgrade

    root = tmp_path_factory.mktemp("request-world")
    db = root / "world.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    build_world(engine, load_settings(), root)
    add_requests(engine)
    engine.dispose()
    yield root, db


def _cases() -> list[tuple[str, int, Case]]:
    return [(name, i, case) for name, cases in CASES.items() for i, case in enumerate(cases)]


@pytest.mark.parametrize(
    ("name", "index", "case"), _cases(), ids=[f"{n}[{i}]" for n, i, _ in _cases()]
)
def test_request_matrix(
    name: str,
    index: int,
    case: Case,
    world_engine: tuple[Engine, Path],  # noqa: F811 - the imported fixture
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_case(name, index, case, world_engine, settings, monkeypatch)
