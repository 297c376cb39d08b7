"""recycle bin

Revision ID: fd960ecfb01b
Revises: 498ecac4b4d9
Create Date: 2026-12-03 00:08:11.383701
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fd960ecfb01b"
down_revision: str | None = "498ecac4b4d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deletion_policies",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("retention_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )
    op.create_table(
        "recycle_bin",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("deleted_by", sa.String(length=32), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=False),
        sa.Column("expunge_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("resource_id"),
    )
    with op.batch_alter_table("recycle_bin", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recycle_bin_expunge_at"), ["expunge_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_recycle_bin_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recycle_bin", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recycle_bin_project_id"))
        batch_op.drop_index(batch_op.f("ix_recycle_bin_expunge_at"))

    op.drop_table("recycle_bin")
    op.drop_table("deletion_policies")
