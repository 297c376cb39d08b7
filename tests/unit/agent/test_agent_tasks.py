"""TaskRegistry: idempotent task ids, persistence, inline answers vs callbacks, per-VM order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.tasks import Runner, TaskRegistry
from corral.agent.taskstore import TaskStore
from corral.api.agent import AgentTask, TaskState, TaskStatus
from corral.api.errors import InvalidState, NotFound


def task(task_id: str, vm_id: str = "vm-1", url: str | None = "/cb") -> AgentTask:
    return AgentTask.model_validate(
        {"task_id": task_id, "payload": {"kind": "vm.start", "vm_id": vm_id}, "callback_url": url}
    )


class Recorder:
    """Runner factory that counts runs and can be held on a gate."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.runs: list[str] = []
        self.active = 0
        self.max_active = 0

    def runner(self, name: str, result: dict[str, object] | None = None) -> Runner:
        async def run() -> dict[str, object]:
            self.runs.append(name)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.active -= 1
            return result or {"name": name}

        return run


class Notified:
    def __init__(self) -> None:
        self.calls: list[tuple[TaskStatus, str]] = []
        self.event = asyncio.Event()

    async def __call__(self, status: TaskStatus, url: str) -> None:
        self.calls.append((status, url))
        self.event.set()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    s = TaskStore(tmp_path / "tasks.sqlite3")
    s.open()
    yield s
    s.close()


async def test_fast_task_answers_inline_without_callback(store: TaskStore) -> None:
    notify, rec = Notified(), Recorder()
    reg = TaskRegistry(store=store, notify=notify, inline_wait=0.5)
    status = await reg.submit(task("t1"), key="vm-1", run=rec.runner("a"))
    assert status.state == TaskState.succeeded
    assert status.result == {"name": "a"}
    await asyncio.sleep(0.05)
    assert notify.calls == []


async def test_slow_task_returns_running_then_calls_back_once(store: TaskStore) -> None:
    notify, rec = Notified(), Recorder(delay=0.2)
    reg = TaskRegistry(store=store, notify=notify, inline_wait=0.02)
    status = await reg.submit(task("t1"), key="vm-1", run=rec.runner("a"))
    assert status.state == TaskState.running
    assert reg.get("t1").state == TaskState.running
    await asyncio.wait_for(notify.event.wait(), 2)
    await asyncio.sleep(0.05)
    assert [(s.state, url) for s, url in notify.calls] == [(TaskState.succeeded, "/cb")]
    assert reg.get("t1").state == TaskState.succeeded


async def test_duplicate_id_never_runs_twice(store: TaskStore) -> None:
    notify, rec = Notified(), Recorder(delay=0.1)
    reg = TaskRegistry(store=store, notify=notify, inline_wait=0.01)
    first = await reg.submit(task("t1"), key="vm-1", run=rec.runner("a"))
    while_running = await reg.submit(task("t1"), key="vm-1", run=rec.runner("b"))
    assert first.state == while_running.state == TaskState.running
    await asyncio.wait_for(notify.event.wait(), 2)
    after = await reg.submit(task("t1"), key="vm-1", run=rec.runner("c"))
    assert after.state == TaskState.succeeded
    assert after.result == {"name": "a"}
    assert rec.runs == ["a"]
    assert len(notify.calls) == 1


async def test_duplicate_after_restart_returns_first_answer(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    rec = Recorder()
    store = TaskStore(path)
    store.open()
    reg = TaskRegistry(store=store, notify=Notified(), inline_wait=0.5)
    first = await reg.submit(task("t1"), key="vm-1", run=rec.runner("a"))
    store.close()

    store2 = TaskStore(path)
    store2.open()
    reg2 = TaskRegistry(store=store2, notify=Notified(), inline_wait=0.5)
    again = await reg2.submit(task("t1"), key="vm-1", run=rec.runner("b"))
    store2.close()
    assert again == first
    assert rec.runs == ["a"]


async def test_task_interrupted_by_restart_fails_and_is_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    store = TaskStore(path)
    store.open()
    store.started(TaskStatus(task_id="t1", state=TaskState.running), "/cb/t1")
    store.close()

    store2 = TaskStore(path)
    store2.open()
    interrupted = store2.recover_interrupted()
    assert [(s.task_id, s.state, url) for s, url in interrupted] == [
        ("t1", TaskState.failed, "/cb/t1")
    ]
    rec = Recorder()
    reg = TaskRegistry(store=store2, notify=Notified(), inline_wait=0.5)
    status = await reg.submit(task("t1"), key="vm-1", run=rec.runner("b"))
    store2.close()
    assert status.state == TaskState.failed
    assert status.error is not None and status.error.code == "agent_error"
    assert rec.runs == []


async def test_same_vm_serialized_other_vms_parallel(store: TaskStore) -> None:
    same, other = Recorder(delay=0.05), Recorder(delay=0.05)
    reg = TaskRegistry(store=store, notify=Notified(), inline_wait=1.0)
    await asyncio.gather(
        *(reg.submit(task(f"s{i}"), key="vm-1", run=same.runner(f"s{i}")) for i in range(4))
    )
    await asyncio.gather(
        *(reg.submit(task(f"o{i}"), key=f"vm-{i}", run=other.runner(f"o{i}")) for i in range(4))
    )
    assert same.max_active == 1
    assert same.runs == ["s0", "s1", "s2", "s3"]
    assert other.max_active == 4


async def test_failures_become_failed_statuses(store: TaskStore) -> None:
    reg = TaskRegistry(store=store, notify=Notified(), inline_wait=0.5)

    async def invalid() -> dict[str, object]:
        raise InvalidState("VM is paused", vm_id="vm-1")

    async def crash() -> dict[str, object]:
        raise RuntimeError("boom")

    s1 = await reg.submit(task("t1"), key="vm-1", run=invalid)
    s2 = await reg.submit(task("t2"), key="vm-1", run=crash)
    assert s1.state == s2.state == TaskState.failed
    assert s1.error is not None and s1.error.code == "invalid_state"
    assert s1.error.context == {"vm_id": "vm-1"}
    assert s2.error is not None and s2.error.code == "internal"
    assert s2.error.context == {"exception": "RuntimeError"}


async def test_unknown_task_is_not_found(store: TaskStore) -> None:
    reg = TaskRegistry(store=store, notify=Notified())
    with pytest.raises(NotFound):
        reg.get("nope")


async def test_store_is_bounded(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "t.sqlite3", max_rows=5)
    store.open()
    for i in range(12):
        store.started(TaskStatus(task_id=f"t{i}", state=TaskState.running), None)
        store.finished(TaskStatus(task_id=f"t{i}", state=TaskState.succeeded))
    store.prune()
    assert store.count() == 5
    assert store.get("t11") is not None
    assert store.get("t0") is None
    store.close()


async def test_drain_cancels_tasks_left_running(store: TaskStore) -> None:
    rec = Recorder(delay=10)
    reg = TaskRegistry(store=store, notify=Notified(), inline_wait=0.0)
    await reg.submit(task("t1"), key="vm-1", run=rec.runner("a"))
    await reg.drain(0.05)
    stored = store.get("t1")
    assert stored is not None and stored.state == TaskState.running
