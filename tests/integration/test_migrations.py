"""The schema migrates on both databases, twice harmlessly, with all upstream tables."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from baadal import constants as C
from baadal.db.models import Base, User, UserGroup
from baadal.db.schema import alembic_config, current_revision, upgrade
from baadal.db.session import make_engine, session_scope

UPSTREAM_TABLES = {
    "constants", "organisation", "users", "user_group", "user_membership", "vlan",
    "security_domain", "public_ip_pool", "private_ip_pool", "host", "datastore", "template",
    "vm_data", "request_queue", "vm_event_log", "user_vm_map", "host_affinity",
    "attached_disks", "snapshot", "task_queue", "task_queue_event", "vnc_access",
}  # fmt: skip

pytestmark = pytest.mark.integration


def test_upgrade_creates_every_table_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)  # second run: no error, no duplicate reference rows
    tables = set(inspect(engine).get_table_names())
    assert tables >= UPSTREAM_TABLES
    assert set(Base.metadata.tables) <= tables
    assert current_revision(engine) is not None
    with session_scope(engine) as s:
        roles = sorted(s.scalars(select(UserGroup.role)))
        assert roles == sorted(r.value for r in C.Role)
        assert s.get(User, C.SYSTEM_USER_ID).username == "system"
    engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    """No model change is missing a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_tasks_queued_before_0004_start_with_no_lost_runs(db_url: str) -> None:
    """0004 adds the count of lost runs apart from ``attempts`` (which also counts handler
    failures an admin retried); tasks already there start at zero."""
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0003")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO task_queue (task_type, parameters, priority, status, created_at,"
            " run_after, attempts) VALUES ('Test Echo', '{}', 1, 5, '2026-01-01', '2026-01-01', 4)"
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT attempts, lost_attempts FROM task_queue").one()
    engine.dispose()
    assert tuple(row) == (4, 0)


def test_0006_forgets_vnc_passwords_and_keeps_the_vms_rows(db_url: str) -> None:
    """VNC passwords were stored per VM until 0006; they go, and dropping the column must
    not take the VM's rows in other tables with it (a table copy would cascade)."""
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0005")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO vm_data (id, vm_name, vm_identity, vnc_password, status,"
            ' public_ip_wanted, "RAM", "HDD", "vCPU", "extra_HDD", locked, start_time,'
            " snapshot_flag, affinity_flag) VALUES (50, 'old', 'o_u_old', 'secret', 1,"
            " false, 1024, 10, 1, 0, false, '2026-01-01', 0, 0)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO user_vm_map (user_id, vm_id) VALUES ({C.SYSTEM_USER_ID}, 50)"
        )
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("vm_data")}
    with engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT count(*) FROM user_vm_map WHERE vm_id = 50").scalar()
    engine.dispose()
    assert "vnc_password" not in columns and kept == 1


def test_0014_vnc_ports_per_host_keep_the_vms_rows(db_url: str) -> None:
    """The cloud-wide unique port goes (on SQLite by a table copy, which must not cascade
    to the VMs' rows in other tables); two VMs off any host may then share a port."""
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0011")
    vm = (
        "INSERT INTO vm_data (id, vm_name, vm_identity, vnc_port, status, public_ip_wanted,"
        ' "RAM", "HDD", "vCPU", "extra_HDD", locked, start_time, snapshot_flag, affinity_flag)'
        " VALUES ({id}, 'v{id}', 'o_u_v{id}', 5901, 1, false, 1024, 10, 1, 0, false,"
        " '2026-01-01', 0, 0)"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(vm.format(id=50))
        conn.exec_driver_sql(
            f"INSERT INTO user_vm_map (user_id, vm_id) VALUES ({C.SYSTEM_USER_ID}, 50)"
        )
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(vm.format(id=51))
        kept = conn.exec_driver_sql("SELECT count(*) FROM user_vm_map WHERE vm_id = 50").scalar()
    engine.dispose()
    assert kept == 1


def test_0010_organisations_start_closed_and_keep_their_people(db_url: str) -> None:
    """Organisations made before 0010 take no self-registrations (as the old setting's
    default); adding the column must not copy the table its users point at."""
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0009")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO organisation (id, name) VALUES (70, 'IITD')")
        conn.exec_driver_sql(
            "INSERT INTO users (username, first_name, last_name, password, organisation_id,"
            " block_user, mail_subscribed, registration_key, reset_password_key,"
            " registration_id) VALUES ('asha', '', '', '', 70, false, true, '', '', '')"
        )
    upgrade(engine)
    with engine.connect() as conn:
        opened = conn.exec_driver_sql(
            "SELECT allows_registration FROM organisation WHERE id = 70"
        ).scalar()
        people = conn.exec_driver_sql(
            "SELECT count(*) FROM users WHERE organisation_id = 70"
        ).scalar()
    engine.dispose()
    assert (bool(opened), people) == (False, 1)


def test_0018_keeps_the_oldest_of_pending_twins_and_then_refuses_twins(db_url: str) -> None:
    """Twins that raced in before 0018 (the oldest stays pending, the others are rejected
    with the reason); afterwards a pending twin cannot be written, a decided one can."""
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0017")
    req = (
        "INSERT INTO request_queue (id, vm_name, parent_id, request_type, owner_id, status,"
        ' "extra_HDD", public_ip, clone_full, request_time)'
        " VALUES ({id}, '{name}', NULL, 'create', {owner}, {status}, 0, false, false,"
        " '2026-01-01')"
    )
    pending, rejected = int(C.RequestStatus.VERIFIED), int(C.RequestStatus.REJECTED)
    owner = C.SYSTEM_USER_ID
    with engine.begin() as conn:
        for id_, name, status in ((1, "a", pending), (2, "a", pending), (3, "a", pending),
                                  (4, "b", pending), (5, "a", rejected)):  # fmt: skip
            conn.exec_driver_sql(req.format(id=id_, name=name, owner=owner, status=status))
    upgrade(engine)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, status, reject_reason FROM request_queue ORDER BY id"
        ).all()
        conn.exec_driver_sql(req.format(id=6, name="a", owner=owner, status=rejected))
    assert [(r[0], r[1]) for r in rows] == [
        (1, pending), (2, rejected), (3, rejected), (4, pending), (5, rejected)
    ]  # fmt: skip
    assert rows[1][2] == "a twin of an older pending request" and rows[4][2] is None
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(req.format(id=7, name="b", owner=owner, status=pending))
    engine.dispose()
