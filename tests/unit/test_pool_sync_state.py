"""The server's per-process pool sync state: one sync per host at a time, forced syncs queued
behind a running one, failures backed off, expected digests cached per cluster with invalidation,
everything cancelled at close."""

from __future__ import annotations

import asyncio

from corral.server.agents.pool_state import MAX_BACKOFF_S, SETTLE_S, PoolSyncState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_sync_per_host_and_forced_ones_run_after() -> None:
    clock = Clock()
    state = PoolSyncState(clock=clock)
    gate = asyncio.Event()
    runs: list[str] = []

    def sync(name: str, ok: bool = True, wait: bool = False) -> object:
        async def run() -> bool:
            runs.append(name)
            if wait:
                await gate.wait()
            return ok

        return run

    assert state.start("h", sync("first", wait=True))  # type: ignore[arg-type]
    assert not state.start("h", sync("beat"))  # type: ignore[arg-type]
    assert not state.start("h", sync("forced"), force=True)  # type: ignore[arg-type]
    gate.set()
    await state.settle("h")
    assert runs == ["first", "forced"]
    # right after a success, heartbeats do not sync again before SETTLE_S
    assert not state.start("h", sync("beat"))  # type: ignore[arg-type]
    clock.now += SETTLE_S
    assert state.start("h", sync("bad", ok=False))  # type: ignore[arg-type]
    await state.settle("h")
    assert state.failures("h") == 1
    delays = []
    for _ in range(8):
        t0 = clock.now
        while not state.start("h", sync("bad", ok=False)):  # type: ignore[arg-type]
            clock.now += 0.5
        delays.append(clock.now - t0)
        await state.settle("h")
    assert delays[:3] == [1.0, 2.0, 4.0] and delays[-1] == MAX_BACKOFF_S
    assert state.start("h", sync("forced", ok=True), force=True)  # type: ignore[arg-type]
    await state.settle("h")
    assert state.failures("h") == 0
    await state.close()


async def test_expected_digests_cached_invalidated_and_loaded_once() -> None:
    clock = Clock()
    state = PoolSyncState(ttl=60, clock=clock)
    calls = 0
    gate = asyncio.Event()

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "d1"

    waiters = [asyncio.create_task(state.load("c", compute)) for _ in range(5)]
    gate.set()
    assert await asyncio.gather(*waiters) == ["d1"] * 5 and calls == 1
    assert state.expected("c") == "d1"
    clock.now += 61
    assert state.expected("c") is None  # expired
    state.remember("c", "d2", state.version)
    version = state.version
    state.invalidate()
    assert state.expected("c") is None
    state.remember("c", "stale", version)  # computed before the change: not cached
    assert state.expected("c") is None
    await state.close()


async def test_close_cancels_running_syncs() -> None:
    state = PoolSyncState()
    started = asyncio.Event()

    async def forever() -> bool:
        started.set()
        await asyncio.Event().wait()
        return True

    assert state.start("h", forever)
    await started.wait()
    await state.close()
    assert not state.in_flight("h")
    assert not state.start("h", forever)  # closed
