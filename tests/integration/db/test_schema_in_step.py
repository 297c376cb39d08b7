"""The migrations build exactly the schema the tables declare (an autogenerate diff after
``upgrade head`` is empty): a column added to ``tables.py`` without its migration fails here."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from corral.server.db.engine import MIGRATIONS
from corral.server.db.tables import Base


def test_migrations_match_the_tables(tmp_path: Path) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with create_engine(f"sqlite:///{tmp_path / 'schema.db'}").begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
