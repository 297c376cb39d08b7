"""iscsi luns

Revision ID: cf8ea31318fc
Revises: fd960ecfb01b
Create Date: 2026-12-03 00:24:07.149864
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cf8ea31318fc"
down_revision: str | None = "fd960ecfb01b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("luns", sa.JSON(), nullable=True))

    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_volumes_pool_file", ["pool_id", "pool_name"])


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_constraint("uq_volumes_pool_file", type_="unique")

    with op.batch_alter_table("storage_pools", schema=None) as batch_op:
        batch_op.drop_column("luns")
