"""People for request tests: two organisations and one account per role, on a small
cloud of fake hosts (``fake:///``) with the 'tiny' template and the 'research' domain."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from baadal import constants as C
from baadal.auth.roles import add_membership_db
from baadal.config import Settings
from baadal.db.models import Organisation, User
from baadal.db.session import session_scope
from baadal.drivers import fake
from tests.support.cloud import Cloud, make_cloud

#: username -> (organisation, extra roles)
PEOPLE = {
    "admin": ("ORG_A", (C.Role.ADMIN,)),
    "oa": ("ORG_A", (C.Role.ORGADMIN,)),
    "fac": ("ORG_A", (C.Role.FACULTY,)),
    "fac2": ("ORG_A", (C.Role.FACULTY,)),
    "stu": ("ORG_A", ()),
    "eve": ("ORG_A", ()),
    "col": ("ORG_B", ()),
    "fb": ("ORG_B", (C.Role.FACULTY,)),
    "ob": ("ORG_B", (C.Role.ORGADMIN,)),
}


def add_people(engine: Engine) -> None:
    with session_scope(engine) as s:
        orgs = {name: Organisation(name=name) for name in ("ORG_A", "ORG_B")}
        s.add_all(orgs.values())
        s.flush()
        for name, (org, roles) in PEOPLE.items():
            user = User(username=name, organisation_id=orgs[org].id, email=f"{name}@example.org")
            s.add(user)
            s.flush()
            add_membership_db(s, user.id, (*roles, C.Role.USER))


def people_cloud(engine: Engine, settings: Settings, root: Path) -> Cloud:
    """The fake driver keeps its hosts in memory: call ``fake.reset()`` afterwards."""
    fake.reset()
    cloud = make_cloud(engine, settings, root, ["fake:///h1", "fake:///h2"])
    add_people(engine)
    return cloud


def race_approvals(
    engine: Engine, settings: Settings, requests: int, vm_limit: int, *, org: bool = False
) -> int:
    """``requests`` VMs asked for by fac (VERIFIED), fac's quota ``vm_limit`` VMs (with
    ``org``: by fac and fac2 in turn, ORG_A's quota), and an admin approval of each at
    once on its own thread: how many were queued."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from baadal.errors import ResourceExhausted
    from baadal.services import quotas, vm_requests
    from baadal.services.policy import actor_for

    whose = {"org": "ORG_A"} if org else {"user": "fac"}
    with session_scope(engine) as s:
        quotas.set_quota(s, actor_for(s, "admin"), limits={C.QuotaItem.VMS: vm_limit}, **whose)
        askers = [actor_for(s, "fac"), actor_for(s, "fac2")] if org else [actor_for(s, "fac")]
        ids = [
            vm_requests.request_create(
                s,
                askers[i % len(askers)],
                settings,
                vm_name=f"race{i}",
                template="tiny",
                security_domain="research",
            )
            for i in range(requests)
        ]
    start = threading.Barrier(requests)

    def approve(request_id: int) -> bool:
        start.wait()
        try:
            with session_scope(engine) as s:
                vm_requests.approve_request(s, actor_for(s, "admin"), settings, request_id)
            return True
        except ResourceExhausted:
            return False

    with ThreadPoolExecutor(requests) as pool:
        return sum(pool.map(approve, ids))
