"""storage pool reports per host

Revision ID: 06c0b16e1f88
Revises: 66f9d7c00a2f
Create Date: 2026-12-02 21:11:30.065635
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "06c0b16e1f88"
down_revision: str | None = "66f9d7c00a2f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_pool_hosts",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("host_id", sa.String(length=32), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("total_gb", sa.Float(), nullable=False),
        sa.Column("free_gb", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pool_id"], ["storage_pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pool_id", "host_id"),
    )
    with op.batch_alter_table("storage_pool_hosts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_storage_pool_hosts_host_id"), ["host_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("storage_pool_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_pool_hosts_host_id"))

    op.drop_table("storage_pool_hosts")
