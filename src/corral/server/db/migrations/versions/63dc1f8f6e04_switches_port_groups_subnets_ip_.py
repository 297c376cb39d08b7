"""switches, port groups, subnets, ip allocations, security groups

Revision ID: 63dc1f8f6e04
Revises: f87b789f5981
Create Date: 2026-12-03 06:25:13.497112
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "63dc1f8f6e04"
down_revision: str | None = "f87b789f5981"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "switches",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("uplink", sa.String(length=15), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("switches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_switches_created_at"), ["created_at"], unique=False)

    op.create_table(
        "port_groups",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("switch_id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("segment_key", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["switch_id"],
            ["switches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("segment_key"),
    )
    with op.batch_alter_table("port_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_port_groups_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_port_groups_switch_id"), ["switch_id"], unique=False)

    op.create_table(
        "security_groups",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("intra_group", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name", name="uq_security_groups_project_name"),
    )
    with op.batch_alter_table("security_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_groups_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_security_groups_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_security_groups_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_security_groups_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "security_group_rules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("ethertype", sa.String(length=4), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("port_min", sa.Integer(), nullable=True),
        sa.Column("port_max", sa.Integer(), nullable=True),
        sa.Column("remote_cidr", sa.String(length=64), nullable=True),
        sa.Column("remote_group_id", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["security_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["remote_group_id"],
            ["security_groups.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("group_id", "priority", name="uq_security_group_rules_priority"),
    )
    with op.batch_alter_table("security_group_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_group_rules_group_id"), ["group_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_security_group_rules_remote_group_id"), ["remote_group_id"], unique=False
        )

    op.create_table(
        "subnets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("port_group_id", sa.String(length=32), nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=True),
        sa.Column("dns_servers", sa.JSON(), nullable=False),
        sa.Column("ranges", sa.JSON(), nullable=False),
        sa.Column("reserved", sa.JSON(), nullable=False),
        sa.Column("dhcp", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_group_id"],
            ["port_groups.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnets_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_subnets_port_group_id"), ["port_group_id"], unique=False
        )

    op.create_table(
        "switch_clusters",
        sa.Column("switch_id", sa.String(length=32), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["switch_id"], ["switches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("switch_id", "cluster_id"),
    )
    with op.batch_alter_table("switch_clusters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_switch_clusters_cluster_id"), ["cluster_id"], unique=False
        )

    op.create_table(
        "ip_allocations",
        sa.Column("subnet_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("nic_id", sa.String(length=32), nullable=True),
        sa.Column("vm_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subnet_id"],
            ["subnets.id"],
        ),
        sa.PrimaryKeyConstraint("subnet_id", "address"),
    )
    with op.batch_alter_table("ip_allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ip_allocations_nic_id"), ["nic_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ip_allocations_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "switch_uplinks",
        sa.Column("switch_id", sa.String(length=32), nullable=False),
        sa.Column("host_id", sa.String(length=32), nullable=False),
        sa.Column("interface", sa.String(length=15), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["switch_id"], ["switches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("switch_id", "host_id"),
    )
    with op.batch_alter_table("switch_uplinks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_switch_uplinks_host_id"), ["host_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("switch_uplinks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_switch_uplinks_host_id"))

    op.drop_table("switch_uplinks")
    with op.batch_alter_table("ip_allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ip_allocations_vm_id"))
        batch_op.drop_index(batch_op.f("ix_ip_allocations_nic_id"))

    op.drop_table("ip_allocations")
    with op.batch_alter_table("switch_clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_switch_clusters_cluster_id"))

    op.drop_table("switch_clusters")
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnets_port_group_id"))
        batch_op.drop_index(batch_op.f("ix_subnets_created_at"))

    op.drop_table("subnets")
    with op.batch_alter_table("security_group_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_group_rules_remote_group_id"))
        batch_op.drop_index(batch_op.f("ix_security_group_rules_group_id"))

    op.drop_table("security_group_rules")
    with op.batch_alter_table("security_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_groups_project_id"))
        batch_op.drop_index(batch_op.f("ix_security_groups_owner_id"))
        batch_op.drop_index(batch_op.f("ix_security_groups_name"))
        batch_op.drop_index(batch_op.f("ix_security_groups_created_at"))

    op.drop_table("security_groups")
    with op.batch_alter_table("port_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_groups_switch_id"))
        batch_op.drop_index(batch_op.f("ix_port_groups_created_at"))

    op.drop_table("port_groups")
    with op.batch_alter_table("switches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_switches_created_at"))

    op.drop_table("switches")
