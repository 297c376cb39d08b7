"""image layers

Revision ID: 498ecac4b4d9
Revises: 9d7069ea9d20
Create Date: 2026-12-02 23:56:21.576591
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "498ecac4b4d9"
down_revision: str | None = "9d7069ea9d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key("fk_images_host_id_hosts", "hosts", ["host_id"], ["id"])
        batch_op.create_foreign_key("fk_images_parent_id_images", "images", ["parent_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint("fk_images_parent_id_images", type_="foreignkey")
        batch_op.drop_constraint("fk_images_host_id_hosts", type_="foreignkey")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("host_id")
