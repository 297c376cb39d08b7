"""host tokens sealed: hosts.token -> token_sealed + token_digest

The agent's token stops being stored in plain text. Migrations have no master key, so this one
renames ``token`` to ``token_sealed`` and fills ``token_digest`` (SHA-256, no key needed); the
server seals the plain values left in ``token_sealed`` at start-up, before anything reads them
(``corral.server.agents.host_tokens.seal_plain_tokens``).

Revision ID: c5d2e8f1a7b3
Revises: 7ea6acce425d
Create Date: 2026-11-23 09:00:00.000000
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5d2e8f1a7b3"
down_revision: str | None = "7ea6acce425d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HOSTS = sa.table(
    "hosts", sa.column("id", sa.String), sa.column("token_sealed", sa.String),
    sa.column("token_digest", sa.String),
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.alter_column(
            "token",
            new_column_name="token_sealed",
            existing_type=sa.String(length=128),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
        batch_op.add_column(sa.Column("token_digest", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_HOSTS.c.id, _HOSTS.c.token_sealed)).all()
    for host_id, token in rows:
        conn.execute(
            _HOSTS.update()
            .where(_HOSTS.c.id == host_id)
            .values(token_digest=hashlib.sha256(token.encode()).hexdigest())
        )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.alter_column("token_digest", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(batch_op.f("ix_hosts_token_digest"), ["token_digest"], unique=True)


def downgrade() -> None:
    """Only while no token is sealed yet (opening them needs the master key, which migrations do
    not have): downgrade right after upgrading, before a server started on the new schema."""
    conn = op.get_bind()
    sealed = conn.scalar(sa.select(sa.func.count()).where(_HOSTS.c.token_sealed.like("cs1.%")))
    if sealed:
        raise RuntimeError(
            f"{sealed} host token(s) are sealed with the master key: cannot downgrade "
            "(remove and add those hosts again after downgrading instead)"
        )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_token_digest"))
        batch_op.drop_column("token_digest")
        batch_op.alter_column(
            "token_sealed",
            new_column_name="token",
            existing_type=sa.String(length=255),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
