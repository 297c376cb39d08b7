"""volumes and their attachments

Revision ID: 6169606376c8
Revises: e3a9b4c6d2f1
Create Date: 2026-12-02 20:42:54.298529
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6169606376c8"
down_revision: str | None = "e3a9b4c6d2f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size_gb", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("pool_name", sa.String(length=128), nullable=False),
        sa.Column("host_id", sa.String(length=32), nullable=True),
        sa.Column("instantiated", sa.Boolean(), nullable=False),
        sa.Column("shareable", sa.Boolean(), nullable=False),
        sa.Column("qos", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["storage_pools.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name", name="uq_volumes_project_name"),
    )
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_volumes_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_host_id"), ["host_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_volumes_status"), ["status"], unique=False)

    op.create_table(
        "volume_attachments",
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("vm_id", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("volume_id", "vm_id"),
        sa.UniqueConstraint("vm_id", "device", name="uq_volume_attachments_device"),
    )
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_volume_attachments_vm_id"), ["vm_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_attachments_vm_id"))

    op.drop_table("volume_attachments")
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_status"))
        batch_op.drop_index(batch_op.f("ix_volumes_project_id"))
        batch_op.drop_index(batch_op.f("ix_volumes_pool_id"))
        batch_op.drop_index(batch_op.f("ix_volumes_owner_id"))
        batch_op.drop_index(batch_op.f("ix_volumes_name"))
        batch_op.drop_index(batch_op.f("ix_volumes_host_id"))
        batch_op.drop_index(batch_op.f("ix_volumes_created_at"))

    op.drop_table("volumes")
