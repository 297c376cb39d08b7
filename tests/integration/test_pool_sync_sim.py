"""Agents know the storage pools of their cluster (simulator stack, 2 hosts): a pool attached to
the cluster reaches both agents (``pools.json``) and its capacity becomes what they report; a
detached cluster or a disabled pool is forgotten (and its host rows dropped); an agent that lost
its set converges again through the heartbeat's digest; a failed sync is retried by a later
heartbeat; usage changes travel with heartbeats; an rbd pool's key appears in no log and in no
agent task store."""

from __future__ import annotations

import asyncio
import logging
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import PoolRef, VolumeRef
from corral.up import Stack
from tests.integration.identity.admin import done
from tests.support import postgres
from tests.support.stack import api_client, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIM_DISK_GB = 500
CEPHX = "AQD4v2xmQ0rIGhAAsimulatedcephxkey+/w=="


@dataclass
class Env:
    stack: Stack
    c: httpx.AsyncClient
    cluster: str
    runtimes: dict[str, HostRuntime]  # by host id

    async def pool(self, ref: str) -> dict[str, Any]:
        r = await self.c.get(f"/storage-pools/{ref}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def hosts(self, ref: str) -> list[dict[str, Any]]:
        r = await self.c.get(f"/storage-pools/{ref}/hosts")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def held(self, host_id: str) -> set[str]:
        """The pool ids the host's agent holds (in memory and in its pools.json)."""
        rt = self.runtimes[host_id]
        on_disk = (rt.data_dir / "pools.json").read_text() if rt.pool_store.path.exists() else ""
        ids = {p.id for p in rt.pool_store.pools}
        assert all(i in on_disk for i in ids)
        return ids


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await _pause()


async def _pause() -> None:
    await asyncio.sleep(0.05)  # polling interval, not a synchronization


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("pool-sync")
    database_url = None
    if request.param == "postgres":
        base: str = request.getfixturevalue("pg_server")
        database_url = await postgres.create_database(base, f"t_{uuid.uuid4().hex[:12]}")
    overrides = {"pool_report_interval": 0.2, "heartbeat_interval": 0.3, "sim_disk_gb": SIM_DISK_GB}
    stack_cm = running_stack(tmp, sim_hosts=2, agent_overrides=overrides, database_url=database_url)
    async with stack_cm as stack, api_client(stack) as c:
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        hosts = (await c.get("/hosts")).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        assert len(runtimes) == 2
        yield Env(stack, c, cluster, runtimes)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    for rt in env.runtimes.values():
        rt.faults.clear()
    for p in (await env.c.get("/storage-pools")).json()["items"]:
        done(await env.c.patch(f"/storage-pools/{p['id']}", json={"state": "maintenance"}))
        done(await env.c.delete(f"/storage-pools/{p['id']}"))

    async def forgotten() -> bool:
        return all(not env.held(h) for h in env.runtimes)

    await until(forgotten, "every agent to forget every pool")


async def _create(env: Env, name: str, **extra: Any) -> str:
    body = {"name": name, "type": "local", "settings": {"path": f"/srv/{name}"},
            "clusters": [env.cluster], **extra}  # fmt: skip
    return str(done(await env.c.post("/storage-pools", json=body))["target_id"])


async def test_local_pool_reaches_every_host_and_is_forgotten_when_detached(env: Env) -> None:
    pool_id = await _create(env, "loc")

    async def everywhere() -> bool:
        pool = await env.pool("loc")
        return all(pool_id in env.held(h) for h in env.runtimes) and pool["hosts"]["ok"] == 2

    await until(everywhere, "both agents to hold the pool and report it")
    pool = await env.pool("loc")
    assert pool["capacity"] == {"total_gb": 2 * SIM_DISK_GB, "used_gb": 0, "allocated_gb": 0}
    assert pool["hosts"] == {"ok": 2, "failed": 0}
    reports = await env.hosts("loc")
    assert sorted(r["host_id"] for r in reports) == sorted(env.runtimes)
    for r in reports:
        assert (r["ok"], r["total_gb"], r["free_gb"], r["error"]) == (
            True, SIM_DISK_GB, SIM_DISK_GB, None
        )  # fmt: skip
        assert r["host_name"] and r["updated_at"]
    for rt in env.runtimes.values():
        mode = stat.S_IMODE((rt.data_dir / "pools.json").stat().st_mode)
        assert mode == 0o600

    # usage measured by the agents travels with heartbeats (a noticeable change)
    host = sorted(env.runtimes)[0]
    backend = env.runtimes[host].backends.for_pool(PoolRef(id=pool_id, type="local", settings={}))
    assert isinstance(backend, SimulatedBackend)
    ref = PoolRef(id=pool_id, type="local", settings={"path": "/srv/loc"})
    await backend.create(VolumeRef(volume_id="v1", pool=ref, name="vol-v1.qcow2", size_gb=100))

    async def used() -> bool:
        return (await env.pool("loc"))["capacity"]["used_gb"] == 100

    await until(used, "the used space to be reported")
    await backend.delete(VolumeRef(volume_id="v1", pool=ref, name="vol-v1.qcow2", size_gb=100))

    # detached: both agents forget it, the host rows go, the capacity is unknown again
    done(await env.c.delete(f"/storage-pools/loc/clusters/{env.cluster}"))

    async def forgotten() -> bool:
        return all(pool_id not in env.held(h) for h in env.runtimes)

    await until(forgotten, "both agents to forget the pool")
    assert await env.hosts("loc") == []
    pool = await env.pool("loc")
    assert pool["capacity"]["total_gb"] == 0 and pool["hosts"] == {"ok": 0, "failed": 0}

    # attached again, then disabled: forgotten again
    done(await env.c.post("/storage-pools/loc/clusters", json={"cluster": env.cluster}))
    await until(everywhere, "both agents to hold the pool again")
    done(await env.c.patch("/storage-pools/loc", json={"state": "disabled"}))
    await until(forgotten, "both agents to forget the disabled pool")
    assert await env.hosts("loc") == []
    done(await env.c.patch("/storage-pools/loc", json={"state": "enabled"}))
    await until(everywhere, "both agents to hold the enabled pool")


async def test_an_agent_that_lost_its_set_converges_through_the_digest(env: Env) -> None:
    pool_id = await _create(env, "lost")

    async def held_everywhere() -> bool:
        return all(pool_id in env.held(h) for h in env.runtimes)

    await until(held_everywhere, "both agents to hold the pool")
    host = sorted(env.runtimes)[1]
    rt = env.runtimes[host]
    (rt.data_dir / "pools.json").unlink()
    await rt.reload_pools()  # as after a restart that lost the file
    assert env.held(host) == set()
    await until(held_everywhere, "the agent to get its pools back")
    assert (await env.pool("lost"))["hosts"]["ok"] == 2


async def test_a_failed_sync_is_retried_by_a_later_heartbeat(env: Env) -> None:
    host = sorted(env.runtimes)[0]
    rt = env.runtimes[host]
    rt.faults.fail_next("agent.pools.sync")
    state = env.stack.server.services.agents.pool_sync
    pool_id = await _create(env, "retry")

    async def failed_once() -> bool:
        return not rt.faults.pending()

    await until(failed_once, "the injected failure to be used")

    async def synced() -> bool:
        held = all(pool_id in env.held(h) for h in env.runtimes)
        return held and not state.failures(host) and not state.in_flight(host)

    await until(synced, "the failed host to be synced by a later heartbeat")
    assert (await env.pool("retry"))["hosts"] == {"ok": 2, "failed": 0}


async def test_a_pool_that_cannot_be_prepared_is_reported_failed(env: Env) -> None:
    host = sorted(env.runtimes)[1]
    faults = env.runtimes[host].faults
    faults.fail_next("volume.prepare", times=1_000_000)
    await _create(env, "half")

    async def reported() -> bool:
        return (await env.pool("half"))["hosts"] == {"ok": 1, "failed": 1}

    await until(reported, "one host ok, one failed")
    [bad] = [r for r in await env.hosts("half") if not r["ok"]]
    assert bad["host_id"] == host and "injected failure" in bad["error"]
    # a local pool's total counts the hosts that can use it
    assert (await env.pool("half"))["capacity"]["total_gb"] == SIM_DISK_GB
    faults.clear()

    async def recovered() -> bool:  # prepared again at the next measurement
        return (await env.pool("half"))["hosts"] == {"ok": 2, "failed": 0}

    await until(recovered, "the failed host to prepare the pool at its next measurement")


async def test_rbd_credentials_never_in_logs_or_task_stores(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "ceph", "type": "rbd", "credentials": CEPHX, "clusters": [env.cluster],
            "settings": {"monitors": ["mon1:6789"], "pool": "vms"}}  # fmt: skip
    pool_id = done(await env.c.post("/storage-pools", json=body))["target_id"]

    async def everywhere() -> bool:
        pool = await env.pool("ceph")
        return all(pool_id in env.held(h) for h in env.runtimes) and pool["hosts"]["ok"] == 2

    await until(everywhere, "both agents to hold the rbd pool")
    # a shared pool's capacity is one host's view, not a sum
    assert (await env.pool("ceph"))["capacity"]["total_gb"] == SIM_DISK_GB
    # rotation: a new key reaches the agents (a new digest)
    done(await env.c.patch("/storage-pools/ceph", json={"credentials": CEPHX + "2"}))

    async def rotated() -> bool:
        return all(
            p.credentials == CEPHX + "2"
            for rt in env.runtimes.values()
            for p in rt.pool_store.pools
            if p.id == pool_id
        )

    await until(rotated, "the new key to reach the agents")
    faults = env.runtimes[sorted(env.runtimes)[0]].faults
    faults.fail_next("volume.usage", times=1_000_000)

    async def one_failed() -> bool:
        return (await env.pool("ceph"))["hosts"]["failed"] == 1

    await until(one_failed, "a failed measurement to be reported")
    faults.clear()

    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "pools-sync:" in text or "storage pool" in text  # the sync was logged
    assert CEPHX not in text
    for rt in env.runtimes.values():
        for f in rt.data_dir.glob("tasks.sqlite3*"):
            assert CEPHX.encode() not in f.read_bytes(), f
        assert CEPHX in (rt.data_dir / "pools.json").read_text()  # where it must be (0600)


async def test_a_real_local_directory_reports_statvfs_figures(env: Env, tmp_path: Path) -> None:
    """One host measures with the real local backend: the directory is created on this
    machine and the pool's figures are its file system's (plus the simulated host's)."""
    real, sim = sorted(env.runtimes)
    pools = env.runtimes[real].pools
    before = pools.backends
    pools.backends = Backends({"local": LocalBackend()})
    try:
        path = tmp_path / "real-pool"
        body = {"name": "real", "type": "local", "settings": {"path": str(path)},
                "clusters": [env.cluster]}  # fmt: skip
        done(await env.c.post("/storage-pools", json=body))

        async def reported() -> bool:
            return (await env.pool("real"))["hosts"]["ok"] == 2

        await until(reported, "both hosts to report the pool")
        assert (path / "volumes").is_dir()
        fs = shutil.disk_usage(path)
        by_host = {r["host_id"]: r for r in await env.hosts("real")}
        assert abs(by_host[real]["total_gb"] - fs.total / 2**30) < 0.01
        assert 0 < by_host[real]["free_gb"] <= by_host[real]["total_gb"]
        assert by_host[sim]["total_gb"] == SIM_DISK_GB
        capacity = (await env.pool("real"))["capacity"]
        assert abs(capacity["total_gb"] - (fs.total / 2**30 + SIM_DISK_GB)) < 0.01
        used = (fs.total - fs.free) / 2**30
        assert abs(capacity["used_gb"] - used) < max(1.0, 0.01 * fs.total / 2**30)
    finally:
        pools.backends = before


async def test_a_removed_host_forgets_its_pools(env: Env) -> None:
    """Runs last: removes a host. Its agent forgets the pools (their credentials with them)
    and the pool's capacity no longer counts it."""
    pool_id = await _create(env, "gone")

    async def both() -> bool:
        return (await env.pool("gone"))["hosts"]["ok"] == 2

    await until(both, "both hosts to report the pool")
    host = sorted(env.runtimes)[1]
    rt = env.runtimes.pop(host)
    done(await env.c.delete(f"/hosts/{host}"))
    assert rt.pool_store.pools == () and pool_id not in (rt.data_dir / "pools.json").read_text()
    pool = await env.pool("gone")
    assert pool["hosts"] == {"ok": 1, "failed": 0}
    assert pool["capacity"]["total_gb"] == SIM_DISK_GB
    assert [r["host_id"] for r in await env.hosts("gone")] == list(env.runtimes)
