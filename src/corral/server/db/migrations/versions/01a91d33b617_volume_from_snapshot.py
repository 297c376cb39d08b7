"""volume from snapshot

Revision ID: 01a91d33b617
Revises: cf8ea31318fc
Create Date: 2026-12-03 00:43:28.998952
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "01a91d33b617"
down_revision: str | None = "cf8ea31318fc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_snapshot_id", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_volumes_parent_snapshot_id"), ["parent_snapshot_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_parent_snapshot_id"))
        batch_op.drop_column("parent_snapshot_id")
