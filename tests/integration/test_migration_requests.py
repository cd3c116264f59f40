"""0008 adds the request workflow's columns with plain ALTERs: requests made before keep
their collaborators (a table copy of request_queue would cascade to them)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from baadal import constants as C
from baadal.db.schema import alembic_config, upgrade
from baadal.db.session import make_engine

pytestmark = pytest.mark.integration


def test_0008_keeps_older_requests_and_their_collaborators(db_url: str) -> None:
    engine = make_engine(db_url)
    command.downgrade(alembic_config(engine), "0007")
    assert "quota" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'INSERT INTO request_queue (id, vm_name, request_type, "extra_HDD", public_ip,'
            " status, request_time) VALUES (7, 'old', 'create', 0, false, 1, '2026-01-01')"
        )
        conn.exec_driver_sql(
            f"INSERT INTO request_collaborator (request_id, user_id) VALUES (7, {C.SYSTEM_USER_ID})"
        )
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("request_queue")}
    tables = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT count(*) FROM request_collaborator").scalar()
    engine.dispose()
    assert {"approver_id", "task_id", "reject_reason", "last_reminded_at"} <= columns
    assert kept == 1 and "quota" in tables
