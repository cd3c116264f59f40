"""clone requests may ask for standalone (full) copies (request_queue.clone_full)

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-07 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# plain ALTERs (as 0008's): a batch copy of request_queue would drop the table, and with
# foreign keys on that cascades to its collaborators


def upgrade() -> None:
    op.add_column(
        "request_queue",
        sa.Column("clone_full", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("request_queue", "clone_full")
