"""pool image copies

Revision ID: 50eed1784734
Revises: 01a91d33b617
Create Date: 2026-12-03 00:59:29.642400
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "50eed1784734"
down_revision: str | None = "01a91d33b617"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pool_image_copies",
        sa.Column("pool_id", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["storage_pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pool_id", "image_id"),
    )
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_image_id", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_volumes_base_image_id"), ["base_image_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_base_image_id"))
        batch_op.drop_column("base_image_id")

    op.drop_table("pool_image_copies")
