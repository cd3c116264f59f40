"""one-time console tokens of the browser console (stored as SHA-256)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_console_token_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"],
            ["vm_data.id"],
            name=op.f("fk_console_token_vm_id_vm_data"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_token_token_hash")),
    )
    op.create_index(op.f("ix_console_token_user_id"), "console_token", ["user_id"], unique=False)
    op.create_index(op.f("ix_console_token_vm_id"), "console_token", ["vm_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_console_token_vm_id"), table_name="console_token")
    op.drop_index(op.f("ix_console_token_user_id"), table_name="console_token")
    op.drop_table("console_token")
