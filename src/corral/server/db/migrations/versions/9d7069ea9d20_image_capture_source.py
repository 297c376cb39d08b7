"""image capture source

Revision ID: 9d7069ea9d20
Revises: b4f8debff30c
Create Date: 2026-12-02 23:32:01.721082
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d7069ea9d20"
down_revision: str | None = "b4f8debff30c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_type", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("source_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("source_id")
        batch_op.drop_column("source_type")
