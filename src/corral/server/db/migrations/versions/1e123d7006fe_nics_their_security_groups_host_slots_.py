"""nics, their security groups, host slots, DHCP server addresses

Revision ID: 1e123d7006fe
Revises: b2cca169697a
Create Date: 2026-12-03 08:59:15.845858
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1e123d7006fe"
down_revision: str | None = "b2cca169697a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "host_slots",
        sa.Column("host_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_id", "kind", "number"),
        sa.UniqueConstraint("host_id", "kind", "owner_id", name="uq_host_slots_owner"),
    )
    with op.batch_alter_table("host_slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_host_slots_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "nics",
        sa.Column("vm_id", sa.String(length=32), nullable=False),
        sa.Column("port_group_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("model", sa.String(length=16), nullable=False),
        sa.Column("ingress_default", sa.String(length=8), nullable=False),
        sa.Column("egress_default", sa.String(length=8), nullable=False),
        sa.Column("spoof_check", sa.Boolean(), nullable=False),
        sa.Column("allowed_pairs", sa.JSON(), nullable=False),
        sa.Column("inbound_kbps", sa.Integer(), nullable=True),
        sa.Column("outbound_kbps", sa.Integer(), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_group_id"],
            ["port_groups.id"],
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"],
            ["vms.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mac"),
        sa.UniqueConstraint("vm_id", "position", name="uq_nics_vm_position"),
    )
    with op.batch_alter_table("nics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nics_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_nics_port_group_id"), ["port_group_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nics_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "nic_security_groups",
        sa.Column("nic_id", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["security_groups.id"],
        ),
        sa.ForeignKeyConstraint(["nic_id"], ["nics.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("nic_id", "group_id"),
    )
    with op.batch_alter_table("nic_security_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_nic_security_groups_group_id"), ["group_id"], unique=False
        )

    with op.batch_alter_table("ip_allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_ip_allocations_host_id"), ["host_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_ip_allocations_host_id_hosts", "hosts", ["host_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("ip_allocations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_ip_allocations_host_id_hosts", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_ip_allocations_host_id"))
        batch_op.drop_column("host_id")

    with op.batch_alter_table("nic_security_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nic_security_groups_group_id"))

    op.drop_table("nic_security_groups")
    with op.batch_alter_table("nics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nics_vm_id"))
        batch_op.drop_index(batch_op.f("ix_nics_port_group_id"))
        batch_op.drop_index(batch_op.f("ix_nics_created_at"))

    op.drop_table("nics")
    with op.batch_alter_table("host_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_slots_owner_id"))

    op.drop_table("host_slots")
