"""vm cdrom image and boot order

Revision ID: c25e3179d4a7
Revises: 06c0b16e1f88
Create Date: 2026-12-02 21:53:53.845973
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c25e3179d4a7"
down_revision: str | None = "06c0b16e1f88"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cdrom_image_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("boot_order", sa.JSON(), nullable=False, server_default='["hd"]')
        )
        batch_op.create_index(batch_op.f("ix_vms_cdrom_image_id"), ["cdrom_image_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_vms_cdrom_image_id_images", "images", ["cdrom_image_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_constraint("fk_vms_cdrom_image_id_images", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_vms_cdrom_image_id"))
        batch_op.drop_column("boot_order")
        batch_op.drop_column("cdrom_image_id")
