"""The agent's storage pools: the store (0600, atomic, loaded at start), the digest the server
and the agent agree on, ``pools.sync`` through a runtime (prepared, measured, failures reported
without credentials), and when reports go with a heartbeat."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral.agent import files
from corral.agent.faults import FaultPlan
from corral.agent.heartbeat import POOLS_REFRESH_S, Heartbeater
from corral.agent.pools import HostPools, PoolStore, noticeable, reports_due
from corral.agent.runtime import HostRuntime
from corral.agent.storage.backend import PoolUsage
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    AgentTask,
    Heartbeat,
    PoolRef,
    PoolReport,
    PoolsSync,
    TaskState,
    pools_digest,
)
from corral.api.errors import AgentError, StorageError
from corral.api.storage import RbdSettings
from corral.server.db.tables import StoragePoolRow
from corral.server.secretbox import MasterKey, SecretBox
from corral.server.services.pool_sync import digest_of
from corral.server.workflows.volume_common import credentials_context, pool_ref
from tests.unit.agent.fakes import FakeCompute, FakeVolumes

KEY = "AQBx1k5lAAAAABAAcephxsecretkeyQ=="
RBD = PoolRef(
    id="p-rbd",
    type="rbd",
    settings={"monitors": ["mon1:6789"], "pool": "vms", "user": "admin"},
    credentials=KEY,
)


def local(pool_id: str, path: Path | str) -> PoolRef:
    return PoolRef(id=pool_id, type="local", settings={"path": str(path)})


# -- store -----------------------------------------------------------------------------------


def test_store_is_private_atomic_and_loaded(tmp_path: Path) -> None:
    store = PoolStore(tmp_path / "pools.json")
    store.load()
    assert store.pools == () and store.digest == pools_digest([]) and not store.corrupt
    store.write([RBD, local("p-loc", "/srv/p")])
    path = tmp_path / "pools.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["pools.json"]  # no temp file left
    assert store.digest == pools_digest([local("p-loc", "/srv/p"), RBD])  # order-free

    again = PoolStore(path)
    again.load()
    assert again.pools == (RBD, local("p-loc", "/srv/p")) and again.digest == store.digest

    path.write_text("{not json")
    again.load()
    assert again.pools == () and again.corrupt


def test_failed_write_keeps_the_old_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PoolStore(tmp_path / "pools.json")
    store.write([RBD])
    before = (store.digest, store.generation)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(StorageError):
        store.write([])
    monkeypatch.undo()
    assert (store.digest, store.generation) == before and store.pools == (RBD,)
    assert [p.name for p in tmp_path.iterdir()] == ["pools.json"]  # no temp file left
    reloaded = PoolStore(tmp_path / "pools.json")
    reloaded.load()
    assert reloaded.pools == (RBD,)


def test_digest_agrees_between_server_and_agent(tmp_path: Path) -> None:
    """The server's digest of its rows (credentials opened) equals the digest of what the agent
    stores after the task travelled as JSON and was written and read back."""
    box = SecretBox(MasterKey.generate())
    rows = [
        StoragePoolRow(
            id="p2",
            type="rbd",
            settings=RbdSettings(monitors=["m1", "m2:3300"], pool="vms").model_dump(mode="json"),
            credentials_sealed=box.seal(KEY, credentials_context("p2")),
        ),
        StoragePoolRow(id="p1", type="nfs", settings={"server": "nas", "export": "/e"}),
    ]
    refs = [pool_ref(box, r) for r in rows]
    server_digest = digest_of(refs)

    wire = AgentTask(task_id="t", payload=PoolsSync(pools=refs)).model_dump_json()
    received = AgentTask.model_validate_json(wire).payload
    assert isinstance(received, PoolsSync)
    store = PoolStore(tmp_path / "pools.json")
    store.write(received.pools)
    store.load()
    assert store.digest == server_digest
    assert KEY not in server_digest

    rotated = [r.model_copy(update={"credentials": "other"}) if r.id == "p2" else r for r in refs]
    assert digest_of(rotated) != server_digest  # a rotation is a new set
    moved = [r.model_copy(update={"settings": {"server": "nas", "export": "/f"}}) for r in refs]
    assert digest_of(moved) != server_digest


# -- thresholds ------------------------------------------------------------------------------


def rep(total: float, free: float, ok: bool = True, error: str | None = None) -> PoolReport:
    return PoolReport(pool_id="p", ok=ok, total_gb=total, free_gb=free, error=error)


def test_noticeable_changes() -> None:
    base = rep(1000, 500)
    assert not noticeable(base, rep(1000, 500))
    assert not noticeable(base, rep(1000, 491))  # 9 GiB < 1 % of 1000
    assert noticeable(base, rep(1000, 489))  # 11 GiB > 1 % and > 1 GiB
    assert noticeable(base, rep(1011, 500))
    small = rep(20, 10)
    assert not noticeable(small, rep(20, 9.5))  # 0.5 GiB: below 1 GiB
    assert noticeable(small, rep(20, 8.9))
    assert noticeable(base, rep(0, 0, ok=False, error="down"))
    assert noticeable(rep(0, 0, False, "a"), rep(0, 0, False, "b"))


def test_reports_due() -> None:
    a = PoolReport(pool_id="a", ok=True, total_gb=100, free_gb=50)
    b = PoolReport(pool_id="b", ok=True, total_gb=100, free_gb=50)
    assert not reports_due(None, None)
    assert reports_due(None, [a])
    assert not reports_due({"a": a}, [a.model_copy(update={"free_gb": 49.5})])
    assert reports_due({"a": a}, [a, b])  # a pool appeared
    assert reports_due({"a": a, "b": b}, [a])  # one vanished
    assert reports_due({"a": a}, [])


class _Link:
    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []
        self.attachment = type("A", (), {"host_id": "h"})()

    async def post(self, path: str, body: Any, timeout: float = 0) -> None:
        self.beats.append(body)

    def reachable(self, ok: bool, exc: Exception | None = None) -> None:
        pass


async def test_heartbeat_sends_pools_when_due(monkeypatch: pytest.MonkeyPatch) -> None:
    link = _Link()
    digest = ["d0"]
    hb = Heartbeater(
        name="t",
        interval=2.0,
        link=lambda: link,  # type: ignore[arg-type,return-value]
        facts=_no_facts,
        vms=_no_vms,
        started_at=datetime.now(UTC),
        pools_digest=lambda: digest[0],
    )
    hb.pool_reports([])
    assert await hb.beat_once()
    assert link.beats[-1].pools is None  # no pool, none reported before: nothing to say
    assert link.beats[-1].pools_digest == "d0"

    first = [rep(1000, 500)]
    hb.pool_reports(first)
    digest[0] = "d1"
    assert await hb.beat_once()
    assert link.beats[-1].pools == first and link.beats[-1].pools_digest == "d1"
    hb.pool_reports([rep(1000, 495)])
    assert await hb.beat_once()
    assert link.beats[-1].pools is None  # small change waits
    hb.pool_reports([rep(1000, 400)])
    assert await hb.beat_once()
    assert link.beats[-1].pools == [rep(1000, 400)]

    # at least every POOLS_REFRESH_S
    loop = asyncio.get_running_loop()
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now + POOLS_REFRESH_S + 1)
    assert await hb.beat_once()
    assert link.beats[-1].pools == [rep(1000, 400)]
    monkeypatch.undo()

    hb.wake(resend_facts=True)  # re-attached: everything again
    assert await hb.beat_once()
    assert link.beats[-1].pools == [rep(1000, 400)]

    hb.pool_reports([])  # every pool forgotten: the server must hear it
    assert await hb.beat_once()
    assert link.beats[-1].pools == []


async def _no_facts() -> Any:
    raise AgentError("no facts in this test")


async def _no_vms() -> list[Any]:
    return []


# -- sync through a runtime ------------------------------------------------------------------


def runtime(tmp_path: Path, backends: Backends, faults: FaultPlan | None = None) -> HostRuntime:
    return HostRuntime(
        name="rt",
        data_dir=tmp_path / "agent",
        compute=FakeCompute(),
        volumes=FakeVolumes(tmp_path / "disks"),
        backends=backends,
        faults=faults,
        inline_wait=5.0,
        pool_report_interval=3600,
    )


async def test_sync_prepares_measures_and_survives_restart(tmp_path: Path) -> None:
    """A real directory for a local pool: created, measured with statvfs; an rbd pool that
    cannot be reached is reported failed without its key; the set survives a restart."""
    backends = Backends({"local": LocalBackend(), "rbd": _FailingRbd()})
    rt = runtime(tmp_path, backends)
    await rt.start()
    pool_dir = tmp_path / "pools" / "fast"
    try:
        task = AgentTask(task_id="s1", payload=PoolsSync(pools=[local("p-loc", pool_dir), RBD]))
        status = await rt.submit(task)
        assert status.state == TaskState.succeeded, status
        reports = {r["pool_id"]: r for r in status.result["pools"]}  # type: ignore[attr-defined]
        assert (pool_dir / "volumes").is_dir()
        fs = os.statvfs(pool_dir)
        loc = reports["p-loc"]
        assert loc["ok"] is True and loc["error"] is None
        assert abs(loc["total_gb"] - fs.f_blocks * fs.f_frsize / 2**30) < 0.01
        assert 0 < loc["free_gb"] <= loc["total_gb"]
        bad = reports["p-rbd"]
        assert bad["ok"] is False and "unreachable" in bad["error"] and KEY not in bad["error"]
        assert status.result["digest"] == rt.pool_store.digest
        assert rt.pool_store.digest == pools_digest([local("p-loc", pool_dir), RBD])
        assert KEY not in (tmp_path / "agent" / "tasks.sqlite3").read_bytes().decode("latin-1")
        assert KEY in (tmp_path / "agent" / "pools.json").read_text()  # 0600, checked above
    finally:
        await rt.stop()

    rt2 = runtime(tmp_path, backends)
    await rt2.start()
    try:
        assert [p.id for p in rt2.pool_store.pools] == ["p-loc", "p-rbd"]
        reports2 = await rt2.pools.measure()
        assert reports2 is not None and [r.ok for r in reports2] == [True, False]
        # an empty set forgets everything
        status = await rt2.submit(AgentTask(task_id="s2", payload=PoolsSync(pools=[])))
        assert status.state == TaskState.succeeded and status.result["pools"] == []
        assert rt2.pool_store.pools == ()
    finally:
        await rt2.stop()


async def test_sync_fault_and_task_key(tmp_path: Path) -> None:
    faults = FaultPlan()
    sim = SimulatedBackend(host_name="h", faults=faults, capacity_gb=100)
    rt = runtime(tmp_path, Backends({"local": sim}), faults)
    await rt.start()
    try:
        faults.fail_next("agent.pools.sync")
        task = AgentTask(task_id="f1", payload=PoolsSync(pools=[local("p", "/x")]))
        status = await rt.submit(task)
        assert status.state == TaskState.failed and status.error is not None
        assert rt.pool_store.pools == ()  # nothing stored
        faults.fail_next("volume.usage")
        status = await rt.submit(task.model_copy(update={"task_id": "f2"}))
        assert status.state == TaskState.succeeded
        assert status.result["pools"] == [
            {"pool_id": "p", "ok": False, "total_gb": 0, "free_gb": 0,
             "error": "injected failure of volume.usage", "luns": None}
        ]  # fmt: skip
        measured = await rt.pools.measure()
        assert measured == [PoolReport(pool_id="p", ok=True, total_gb=100, free_gb=100)]
    finally:
        await rt.stop()


class _FailingRbd:
    """An rbd backend whose cluster is unreachable (and whose tool quotes the key, badly)."""

    async def prepare(self, pool: PoolRef) -> None:
        pass

    async def usage(self, pool: PoolRef) -> Any:
        raise StorageError(f"monitors unreachable (--key {pool.credentials})", pool_id=pool.id)


async def test_measure_drops_a_result_of_an_older_set(tmp_path: Path) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    class Slow:
        async def prepare(self, pool: PoolRef) -> None:
            pass

        async def usage(self, pool: PoolRef) -> PoolUsage:
            started.set()
            await gate.wait()
            return PoolUsage(10, 5)

    store = PoolStore(tmp_path / "pools.json")
    store.write([local("a", "/a")])
    seen: list[list[PoolReport]] = []
    pools = HostPools(
        name="t", store=store, backends=Backends({"local": Slow()}), on_reports=seen.append
    )
    measuring = asyncio.create_task(pools.measure())
    await started.wait()
    store.write([])
    gate.set()
    assert await measuring is None and seen == []
