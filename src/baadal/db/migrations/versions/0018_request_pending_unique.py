"""at most one pending request per VM and kind, and per owner and new VM name, enforced by
partial unique indexes (two submissions at once both passed the service's check)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the statuses as of this revision: REQUESTED, VERIFIED, APPROVED wait; REJECTED = 2
STATUSES = "(1, 3, 4)"
PENDING = f"status IN {STATUSES}"
CHANGE = f"parent_id IS NOT NULL AND {PENDING}"
CREATE = f"parent_id IS NULL AND {PENDING}"


def upgrade() -> None:
    # twins that raced in before the indexes: the oldest stays pending, the others are
    # rejected with the reason (their requesters see it), so the indexes can be built
    op.execute(
        "UPDATE request_queue SET status = 2,"
        " reject_reason = 'a twin of an older pending request'"
        f" WHERE {PENDING} AND EXISTS (SELECT 1 FROM request_queue o"
        f" WHERE o.status IN {STATUSES} AND o.id < request_queue.id"
        " AND ((request_queue.parent_id IS NOT NULL AND o.parent_id = request_queue.parent_id"
        "       AND o.request_type = request_queue.request_type)"
        "   OR (request_queue.parent_id IS NULL AND o.parent_id IS NULL"
        "       AND o.owner_id = request_queue.owner_id AND o.vm_name = request_queue.vm_name)))"
    )
    for name, columns, where in (
        ("uq_request_pending_change", ["parent_id", "request_type"], CHANGE),
        ("uq_request_pending_create", ["owner_id", "vm_name"], CREATE),
    ):
        op.create_index(
            name,
            "request_queue",
            columns,
            unique=True,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    op.drop_index("uq_request_pending_create", table_name="request_queue")
    op.drop_index("uq_request_pending_change", table_name="request_queue")
