"""Engine and session factory; SQLite gets WAL and sane pragmas; migrations run at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from corral.server.db.sqlite_inline import inline_creator

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> AsyncEngine:
    """An async engine. For SQLite: WAL, NORMAL sync, foreign keys on, and ONE connection that
    every session takes in turn: SQLite has a single writer, and queueing sessions in the pool is far
    cheaper than SQLite's busy-wait back-off (sessions must therefore never nest). That connection
    runs its statements inline on the event loop (``sqlite_inline``: no thread hop per call)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if not path or path == ":memory:":
            raise ValueError(f"SQLite needs a database file: {url}")
        engine = create_async_engine(
            url,
            async_creator=inline_creator(path, timeout=30),
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every Alembic migration not yet applied (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
