"""Alembic environment: runs on the connection handed over by ``corral.server.db.engine.migrate``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from corral.server.db.tables import Base

target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our portable column types as the plain SQLAlchemy types they store."""
    if type_ == "type" and obj.__class__.__name__ == "UTCDateTime":
        return "sa.DateTime()"
    return False


def run() -> None:
    conn = context.config.attributes.get("connection")
    if conn is None:
        url = context.config.get_main_option("sqlalchemy.url")
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        render_as_batch=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
