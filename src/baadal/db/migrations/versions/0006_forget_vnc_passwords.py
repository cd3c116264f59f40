"""VNC passwords are no longer stored: each console grant sets its own on the running
console and hands it out once, so the per-VM passwords stored until now go.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ALTER (SQLite >= 3.35): a batch copy of vm_data would drop the old table,
    # and with foreign keys on that cascades to the VMs' grants, disks and snapshots
    op.drop_column("vm_data", "vnc_password")


def downgrade() -> None:
    """The column comes back empty: the passwords are gone for good."""
    op.add_column("vm_data", sa.Column("vnc_password", sa.String(length=64), nullable=True))
