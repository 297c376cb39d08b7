"""volumes from an image

Revision ID: b4f8debff30c
Revises: c25e3179d4a7
Create Date: 2026-12-02 22:13:03.145746
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b4f8debff30c"
down_revision: str | None = "c25e3179d4a7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key("fk_volumes_image_id_images", "images", ["image_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_constraint("fk_volumes_image_id_images", type_="foreignkey")
        batch_op.drop_column("image_id")
