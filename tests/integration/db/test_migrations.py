"""Migrations upgrade a database that holds data (SQLite and PostgreSQL) without losing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from corral.server.db.engine import MIGRATIONS

INITIAL = "aa4a27806a3d"


def _to(conn: Connection, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _seed(conn: Connection) -> None:
    now = "2026-01-01 00:00:00"
    conn.execute(text(
        "INSERT INTO images (id, name, status, size_bytes, virtual_size_bytes, created_at, updated_at)"
        f" VALUES ('i1', 'tiny', 'ready', 1, 1, '{now}', '{now}')"))  # fmt: skip
    conn.execute(text(
        "INSERT INTO vms (id, name, status, power_state, cpus, memory_mb, disk_gb, image_id, claimed,"
        f" vnc_password, created_at, updated_at) VALUES ('v1', 'web', 'running', 'running', 1, 64, 1,"
        f" 'i1', false, 'pw', '{now}', '{now}')"))  # fmt: skip
    conn.execute(text(
        "INSERT INTO users (id, name, password_hash, is_admin, created_at, updated_at)"
        f" VALUES ('u1', 'admin', 'x', true, '{now}', '{now}')"))  # fmt: skip


@pytest.mark.postgres
async def test_upgrade_keeps_data_and_names_become_unique_per_project(
    tmp_path: Path, database_url: str | None
) -> None:
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to, INITIAL)
            await conn.run_sync(_seed)
        async with engine.begin() as conn:
            await conn.run_sync(_to, "head")
        async with engine.begin() as conn:
            vm = (await conn.execute(text("SELECT name, shared, project_id FROM vms"))).one()
            assert (vm.name, bool(vm.shared), vm.project_id) == ("web", False, None)
            user = (await conn.execute(text("SELECT enabled, failed_logins FROM users"))).one()
            assert (bool(user.enabled), user.failed_logins) == (True, 0)
            now = "2026-01-02 00:00:00"
            await conn.execute(text(
                f"INSERT INTO projects (id, name, description, share_resources, created_at, updated_at)"
                f" VALUES ('p1', 'p1', '', false, '{now}', '{now}'), ('p2', 'p2', '', false, '{now}', '{now}')"))  # fmt: skip
            insert_vm = (
                "INSERT INTO vms (id, name, status, power_state, cpus, memory_mb, disk_gb, claimed,"
                " vnc_password, shared, project_id, created_at, updated_at) VALUES (:id, 'db', 'running',"
                f" 'running', 1, 64, 1, false, 'pw', false, :p, '{now}', '{now}')"
            )
            # the same name in two projects is fine ...
            await conn.execute(text(insert_vm), {"id": "v2", "p": "p1"})
            await conn.execute(text(insert_vm), {"id": "v3", "p": "p2"})
        # ... twice in one project is not
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(text(insert_vm), {"id": "v4", "p": "p1"})
    finally:
        await engine.dispose()
