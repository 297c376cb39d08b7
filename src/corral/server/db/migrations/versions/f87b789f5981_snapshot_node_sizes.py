"""snapshot node sizes

Revision ID: f87b789f5981
Revises: 9491db8365b6
Create Date: 2026-12-03 06:21:00.699988
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f87b789f5981"
down_revision: str | None = "9491db8365b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("used_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_column("used_bytes")
