"""snapshots, the volumes' active backing and snapshot schedules

Revision ID: 66f9d7c00a2f
Revises: 6169606376c8
Create Date: 2026-12-02 21:10:01.863375
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "66f9d7c00a2f"
down_revision: str | None = "6169606376c8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("volume_id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("file", sa.String(length=128), nullable=False),
        sa.Column("backing", sa.String(length=128), nullable=True),
        sa.Column("size_gb", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
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
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("volume_id", "name", name="uq_snapshots_volume_name"),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshots_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_snapshots_volume_id"), ["volume_id"], unique=False)

    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backing_name", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("current_snapshot_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("snapshot_every_min", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("snapshot_keep", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_auto_snapshot_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_volumes_next_auto_snapshot_at"), ["next_auto_snapshot_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_next_auto_snapshot_at"))
        batch_op.drop_column("next_auto_snapshot_at")
        batch_op.drop_column("snapshot_keep")
        batch_op.drop_column("snapshot_every_min")
        batch_op.drop_column("current_snapshot_id")
        batch_op.drop_column("backing_name")

    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_volume_id"))
        batch_op.drop_index(batch_op.f("ix_snapshots_status"))
        batch_op.drop_index(batch_op.f("ix_snapshots_project_id"))
        batch_op.drop_index(batch_op.f("ix_snapshots_parent_id"))
        batch_op.drop_index(batch_op.f("ix_snapshots_owner_id"))
        batch_op.drop_index(batch_op.f("ix_snapshots_name"))
        batch_op.drop_index(batch_op.f("ix_snapshots_created_at"))

    op.drop_table("snapshots")
