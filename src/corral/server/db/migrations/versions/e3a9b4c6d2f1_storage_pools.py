"""storage pools and their attached clusters

Revision ID: e3a9b4c6d2f1
Revises: c5d2e8f1a7b3
Create Date: 2026-12-02 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3a9b4c6d2f1"
down_revision: str | None = "c5d2e8f1a7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_pools",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("credentials_sealed", sa.Text(), nullable=True),
        sa.Column("overcommit", sa.Float(), nullable=False),
        sa.Column("total_gb", sa.Float(), nullable=False),
        sa.Column("used_gb", sa.Float(), nullable=False),
        sa.Column("allocated_gb", sa.Float(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_storage_pools_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "storage_pool_clusters",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pool_id"], ["storage_pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pool_id", "cluster_id"),
    )
    with op.batch_alter_table("storage_pool_clusters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_storage_pool_clusters_cluster_id"), ["cluster_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("storage_pool_clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_pool_clusters_cluster_id"))
    op.drop_table("storage_pool_clusters")
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_pools_created_at"))
    op.drop_table("storage_pools")
