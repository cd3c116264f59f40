"""VNC ports unique per host instead of cloud-wide

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-07 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ports were unique cloud-wide, so they are unique per host already
    with op.batch_alter_table("vm_data") as batch:
        batch.drop_constraint("uq_vm_data_vnc_port", type_="unique")
        batch.create_unique_constraint("uq_vm_data_host_vnc_port", ["host_id", "vnc_port"])


def downgrade() -> None:
    # fails while two hosts' VMs share a port: give one of them another port first
    with op.batch_alter_table("vm_data") as batch:
        batch.drop_constraint("uq_vm_data_host_vnc_port", type_="unique")
        batch.create_unique_constraint("uq_vm_data_vnc_port", ["vnc_port"])
