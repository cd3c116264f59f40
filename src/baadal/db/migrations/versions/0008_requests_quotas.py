"""requests: approver, reject reason, decisions, queued task, reminders; quota limits

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: plain ALTERs: a batch copy of request_queue would drop the table, and with foreign
#: keys on that cascades to its collaborators
#: task_id and vm_id are plain ids (kept when the VM goes, as in task_queue_event)
_COLUMNS = (
    ("approver_id", sa.Integer(), "users"),
    ("public_ip_change", sa.Boolean(), None),
    ("reject_reason", sa.String(length=512), None),
    ("decided_by_id", sa.Integer(), "users"),
    ("decided_at", sa.DateTime(), None),
    ("task_id", sa.Integer(), None),
    ("vm_id", sa.Integer(), None),
    ("last_reminded_at", sa.DateTime(), None),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, type_, refers_to in _COLUMNS:
        if refers_to and sqlite:  # SQLite: a REFERENCES clause, never ALTER ... CONSTRAINT
            op.execute(
                f"ALTER TABLE request_queue ADD COLUMN {name} INTEGER REFERENCES {refers_to}(id)"
            )
            continue
        args = []
        if refers_to:
            fk_name = op.f(f"fk_request_queue_{name}_{refers_to}")
            args.append(sa.ForeignKey(f"{refers_to}.id", name=fk_name))
        op.add_column("request_queue", sa.Column(name, type_, *args, nullable=True))
    op.create_table(
        "quota",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("vms", sa.Integer(), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=True),
        sa.Column("ram_gb", sa.Integer(), nullable=True),
        sa.Column("disk_gb", sa.Integer(), nullable=True),
        sa.Column("public_ips", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (organisation_id IS NULL)",
            name=op.f("ck_quota_quota_user_or_org"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_quota_organisation_id_organisation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_quota_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota")),
        sa.UniqueConstraint("organisation_id", name=op.f("uq_quota_organisation_id")),
        sa.UniqueConstraint("user_id", name=op.f("uq_quota_user_id")),
    )


def downgrade() -> None:
    op.drop_table("quota")
    for name, *_ in reversed(_COLUMNS):
        op.drop_column("request_queue", name)
