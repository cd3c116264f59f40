"""task lost attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # tasks already queued start a fresh count of lost runs
    with op.batch_alter_table("task_queue", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lost_attempts", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("task_queue", schema=None) as batch_op:
        batch_op.drop_column("lost_attempts")
