"""root volumes and whole-VM snapshots

Revision ID: 9491db8365b6
Revises: 50eed1784734
Create Date: 2026-12-03 06:00:05.037754
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9491db8365b6"
down_revision: str | None = "50eed1784734"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vm_snapshots",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("vm_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("memory", sa.Boolean(), nullable=False),
        sa.Column("memory_host_id", sa.String(length=32), nullable=True),
        sa.Column("quiesced", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vm_id", "name", name="uq_vm_snapshots_vm_name"),
    )
    with op.batch_alter_table("vm_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_vm_snapshots_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_vm_snapshots_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_vm_snapshots_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_vm_snapshots_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_vm_snapshots_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_vm_snapshots_vm_id"), ["vm_id"], unique=False)

    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vm_snapshot_id", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_snapshots_vm_snapshot_id"), ["vm_snapshot_id"], unique=False
        )

    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("root_volume_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_vms_root_volume_id"), ["root_volume_id"], unique=False)

    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=8), server_default="data", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_column("role")

    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_root_volume_id"))
        batch_op.drop_column("root_volume_id")

    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_vm_snapshot_id"))
        batch_op.drop_column("vm_snapshot_id")

    with op.batch_alter_table("vm_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_vm_id"))
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_status"))
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_project_id"))
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_owner_id"))
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_name"))
        batch_op.drop_index(batch_op.f("ix_vm_snapshots_created_at"))

    op.drop_table("vm_snapshots")
