"""Migrations upgrade a database that holds data (SQLite and PostgreSQL) without losing it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from corral.server.agents import host_tokens
from corral.server.db.engine import MIGRATIONS, make_engine
from corral.server.secretbox import MasterKey, SecretBox

INITIAL = "aa4a27806a3d"
BEFORE_SEALED_HOST_TOKENS = "7ea6acce425d"


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


PLAIN_TOKENS = {"h1": "plain-host-token-one-" + "A" * 22, "h2": "plain-host-token-two-" + "B" * 22}


def _seed_hosts(conn: Connection) -> None:
    now = "2026-01-01 00:00:00"
    conn.execute(text(
        f"INSERT INTO zones (id, name, description, created_at, updated_at) VALUES ('z1', 'z', '', '{now}', '{now}')"))  # fmt: skip
    conn.execute(text(
        "INSERT INTO clusters (id, name, zone_id, description, cpu_overcommit, memory_overcommit,"
        f" created_at, updated_at) VALUES ('c1', 'c', 'z1', '', 4, 1, '{now}', '{now}')"))  # fmt: skip
    for host_id, token in PLAIN_TOKENS.items():
        conn.execute(
            text(
                "INSERT INTO hosts (id, name, cluster_id, url, token, status, enabled, cpus_capacity,"
                " memory_mb_capacity, disk_gb_capacity, cpus_used, memory_mb_used, disk_gb_used,"
                " created_at, updated_at) VALUES (:id, :id, 'c1', :url, :token, 'connected', true,"
                f" 0, 0, 0, 0, 0, 0, '{now}', '{now}')"
            ),
            {"id": host_id, "url": f"https://{host_id}:7070", "token": token},
        )


@pytest.mark.postgres
async def test_plain_host_tokens_are_digested_by_the_migration_then_sealed_at_start(
    tmp_path: Path, database_url: str | None
) -> None:
    """The migration (no master key) moves the token and fills its digest; ``seal_plain_tokens``
    (server start-up) seals it; afterwards no plain token is in the rows, nor in SQLite's files."""
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to, BEFORE_SEALED_HOST_TOKENS)
            await conn.run_sync(_seed_hosts)
        async with engine.begin() as conn:
            await conn.run_sync(_to, "head")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, token_digest FROM hosts"))).all()
        assert {r.id: r.token_digest for r in rows} == {
            h: hashlib.sha256(t.encode()).hexdigest() for h, t in PLAIN_TOKENS.items()
        }
    finally:
        await engine.dispose()

    box = SecretBox(MasterKey.generate())
    engine = make_engine(url)  # the server's engine (SQLite: WAL, one inline connection)
    try:
        assert await host_tokens.seal_plain_tokens(engine, box) == 2
        assert await host_tokens.seal_plain_tokens(engine, box) == 0  # every start: nothing left
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM hosts ORDER BY id"))).all()
        for row in rows:
            values = [str(v) for v in row._mapping.values()]
            assert not any(t in v for t in PLAIN_TOKENS.values() for v in values), values
            assert SecretBox.is_sealed(row.token_sealed)
            assert (
                box.open(row.token_sealed, host_tokens.token_context(row.id))
                == (PLAIN_TOKENS[row.id])
            )
        with pytest.raises(IntegrityError):  # one token, one host
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE hosts SET token_digest = :d WHERE id = 'h2'"),
                    {"d": rows[0].token_digest},
                )
    finally:
        await engine.dispose()
    if database_url is None:
        files = [p for p in tmp_path.iterdir() if p.name.startswith("m.db")]
        assert files
        for path in files:
            data = path.read_bytes()
            for token in PLAIN_TOKENS.values():
                assert token.encode() not in data, path.name
