"""image publish error

Revision ID: b2cca169697a
Revises: 63dc1f8f6e04
Create Date: 2026-12-03 06:26:29.673550
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2cca169697a"
down_revision: str | None = "63dc1f8f6e04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("error")
