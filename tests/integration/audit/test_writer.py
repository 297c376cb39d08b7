"""The audit writer on a real database: group commit under load, a bounded queue while the
database cannot be written, recovery, and isolation of a record the database refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.server.db.engine import make_engine
from corral.server.db.tables_audit import AuditEventRow
from corral.server.http.audit_mw import AuditCapture
from corral.server.services.audit import COLUMNS, TABLE, AuditWriter
from corral.up import Stack
from tests.integration.audit.conftest import events
from tests.support.stack import api_client


def rec(i: int, **over: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    base: dict[str, Any] = dict.fromkeys(COLUMNS)
    base.update(started_at=now, finished_at=now, method="POST", path=f"/api/v1/x/{i}",
                action="x.create", status_code=202, result="success")  # fmt: skip
    base.update(over)
    return base


async def count(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(AuditEventRow.path).order_by(AuditEventRow.id))
        return [r[0] for r in rows]


async def test_concurrent_requests_share_transactions(any_stack: Stack) -> None:
    """N concurrent mutating requests: N records, written in fewer than N transactions."""
    stack = any_stack
    n = 40
    audit_commits = 0

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            conn.info["audit_insert"] = True

    def on_commit(conn: Any) -> None:
        nonlocal audit_commits
        if conn.info.pop("audit_insert", False):
            audit_commits += 1

    sync_engine = stack.server.services.db.sync_engine
    event.listen(sync_engine, "before_cursor_execute", on_execute)
    event.listen(sync_engine, "commit", on_commit)
    try:
        async with api_client(stack) as c:
            await stack.server.app.state.audit.flush()
            audit_commits = 0
            rs = await asyncio.gather(*(c.post("/vms", json={"name": f"v{i}"}) for i in range(n)))
            assert {r.status_code for r in rs} == {422}
            recs = await events(c, stack, "action=vm.create")
    finally:
        event.remove(sync_engine, "before_cursor_execute", on_execute)
        event.remove(sync_engine, "commit", on_commit)
    assert len(recs) == n
    assert sorted(e["request"]["body"]["name"] for e in recs) == sorted(f"v{i}" for i in range(n))
    assert 1 <= audit_commits < n, audit_commits


async def test_records_are_written_without_a_flush(stack: Stack) -> None:
    async with api_client(stack) as c:
        await c.post("/vms", json={})
        for _ in range(100):
            r = await c.get("/audit-events", params={"q": "action=vm.create"})
            if r.json()["total"] == 1:
                break
            await asyncio.sleep(0.05)
        assert r.json()["total"] == 1


async def test_database_down_bounds_the_queue_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")  # no audit table yet
    writer = AuditWriter(lambda: engine, max_queue=5, linger_s=0, retry_s=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="corral.audit"):
            for i in range(8):
                writer.record(rec(i))
            assert (writer.pending, writer.dropped) == (5, 3)
            assert not await writer.flush(timeout=0.3)
            writer.record(rec(99))
            assert (writer.pending, writer.dropped, writer.written) == (5, 4, 0)
            outage = [r.getMessage() for r in caplog.records]
            assert len(outage) == 1 and "dropping" in outage[0]

            async with engine.begin() as conn:
                await conn.run_sync(TABLE.create)
            assert await writer.flush(timeout=10)
            assert (writer.pending, writer.written, writer.dropped) == (0, 5, 4)
            assert await count(engine) == [f"/api/v1/x/{i}" for i in range(5)]
            assert "4 record(s) were dropped" in caplog.records[-1].getMessage()
            writer.record(rec(5))
            assert await writer.flush()
            assert len(caplog.records) == 2
            assert await count(engine) == [f"/api/v1/x/{i}" for i in range(6)]
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_refused_record_is_dropped_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(TABLE.create)
    writer = AuditWriter(lambda: engine)
    try:
        for i in range(3):
            writer.record(rec(i, status_code=None if i == 1 else 202))  # NOT NULL
        assert await writer.flush()
        assert await count(engine) == ["/api/v1/x/0", "/api/v1/x/2"]
        assert (writer.written, writer.dropped) == (2, 1)
        assert any("refused" in r.getMessage() for r in caplog.records)
    finally:
        await writer.close()
        await engine.dispose()


async def test_close_counts_what_could_not_be_written(tmp_path: Path) -> None:
    writer = AuditWriter(lambda: None, retry_s=0.01)  # no database at all
    writer.record(rec(1))
    writer.record(rec(2))
    await writer.close(timeout=0.2)
    assert (writer.pending, writer.written, writer.dropped) == (0, 0, 2)


async def test_the_summary_total_matches(tmp_path: Path) -> None:
    """``transactions`` and ``written`` agree with the table (what the benchmark reports)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(TABLE.create)
    writer = AuditWriter(lambda: engine)
    try:
        for i in range(250):
            writer.record(rec(i))
        assert await writer.flush()
        async with engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(TABLE))
        assert total == writer.written == 250 and writer.transactions == 1
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_crashing_app_is_recorded(tmp_path: Path) -> None:
    """An exception escaping the app still gives one record: 500 ``internal`` if nothing was
    sent, else the status that was sent; the exception goes on to the server."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(TABLE.create)
    writer = AuditWriter(lambda: engine)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"].endswith("late"):
            await send({"type": "http.response.start", "status": 202, "headers": []})
        raise RuntimeError("boom")

    mw = AuditCapture(app, writer=writer, services=lambda: cast(Any, "svc"))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"password": "p"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    try:
        for path in ("/api/v1/vms", "/api/v1/vms/late"):
            scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                     "client": ("10.1.2.3", 1), "headers": [(b"content-type", b"application/json")]}  # fmt: skip
            with pytest.raises(RuntimeError):
                await mw(scope, receive, send)
        assert await writer.flush()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(TABLE).order_by(TABLE.c.id))).all()
        assert [(r.status_code, r.error_code, r.result) for r in rows] == [
            (500, "internal", "failure"), (202, None, "success")]  # fmt: skip
        assert rows[0].error_message == "internal error: RuntimeError"
        assert rows[0].client_ip == "10.1.2.3" and rows[0].action == "vm.create"
        assert json.loads(rows[0].request) == {"body": {"password": "***"}}
    finally:
        await writer.close()
        await engine.dispose()
