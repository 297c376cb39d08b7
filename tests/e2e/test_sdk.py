"""The SDK and the REST API as the README shows them, against a whole in-process Corral (server and
simulated hosts over real HTTP on loopback): fast, no libvirt.

The stack runs in its own thread and event loop, so the blocking ``Client`` (and ``curl``) can be
used from the tests exactly as a user script would.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.agent.heartbeat import EVENT_WINDOW_S
from corral.api.errors import (
    CorralError,
    InvalidInput,
    InvalidState,
    NameTaken,
    NoHostAvailable,
    NotFound,
    Unauthenticated,
)
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.sdk import AsyncClient, Client
from corral.server.services import hosts
from tests.e2e.inprocess import SIM_HOSTS
from tests.support.stack import ADMIN_PASSWORD

REPO = Path(__file__).resolve().parents[2]
SIM_HOST_MEMORY_MB = 131_072


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.fixture(scope="module")
def client(stack_url: str, qcow2: Path) -> Iterator[Client]:
    """The README's client, with the image ``tiny`` imported."""
    with Client.login(stack_url, "admin", ADMIN_PASSWORD, verify=False) as c:
        sent: list[tuple[int, int]] = []
        op = c.images.import_file(
            "tiny", qcow2, progress=lambda done, total: sent.append((done, total))
        )
        op.wait()
        size = qcow2.stat().st_size
        assert sent[-1] == (size, size) and all(t == size for _, t in sent)
        image = c.images.get("tiny")
        assert (image.status, image.format, image.virtual_size_bytes) == (
            "ready",
            "qcow2",
            64 << 20,
        )
        yield c


def settled(c: Client, name: str, status: str, within: float = 5.0) -> None:
    """Wait until the VM shows ``status`` in three reads spanning 0.3 s (README: a state change is
    visible within 5 s). The pause lets power events still in flight land before the next action:
    see ``test_a_late_power_event_does_not_undo_a_newer_operation`` for why that is needed."""
    deadline = time.monotonic() + within
    streak: list[float] = []
    while True:
        now = time.monotonic()
        if c.vms.get(name).status == status:
            streak.append(now)
            if len(streak) >= 3 and now - streak[0] >= 0.3:
                return
        else:
            streak.clear()
        if now > deadline:
            raise AssertionError(f"{name} did not settle as {status!r} within {within} s")
        time.sleep(0.1)


def readme_block(language: str, needle: str) -> str:
    """The README's ``language`` code block that contains ``needle``, dedented."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", readme, re.S | re.M)
    return next(textwrap.dedent(code) for _, code in blocks if needle in code)


def test_the_readme_sdk_example_runs(
    stack_url: str, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    code = readme_block("python", "Client.login").replace("https://127.0.0.1:8443", stack_url)
    exec(compile(code, "README.md", "exec"), {"password": ADMIN_PASSWORD})
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ["succeeded 100%", "running"], printed
    assert printed[0] in ("queued 0%", "running 0%"), printed
    client.vms.delete("web1").wait()


def test_readme_example_and_the_vm_lifecycle(client: Client) -> None:
    c = client
    seen: list[OperationModel] = []
    op = c.vms.create(name="web1", image="tiny", cpus=1, memory_mb=256)
    assert op.type == "vm.create" and not op.done
    assert op.wait(on_progress=seen.append) is op
    assert seen[0].status in (OperationStatus.queued, OperationStatus.running)
    assert (seen[-1].status, seen[-1].progress) == (OperationStatus.succeeded, 100)
    progress = [s.progress for s in seen]
    assert progress == sorted(progress)
    settled(c, "web1", "running")

    for action, status in [("stop", "stopped"), ("start", "running"), ("reboot", "running"),
                           ("pause", "paused"), ("resume", "running")]:  # fmt: skip
        done = getattr(c.vms, action)("web1").wait(timeout=30)
        assert (done.type, done.status) == (f"vm.{action}", "succeeded")
        settled(c, "web1", status)

    with pytest.raises(InvalidState) as refused:
        c.vms.resize("web1", cpus=2, memory_mb=512)
    assert refused.value.context == {"vm": "web1", "status": "running"}
    c.vms.stop("web1", force=True).wait()
    settled(c, "web1", "stopped")
    c.vms.resize("web1", cpus=2, memory_mb=512).wait()
    vm = c.vms.get("web1")
    assert (vm.cpus, vm.memory_mb, vm.status) == (2, 512, "stopped")

    c.vms.delete("web1").wait()
    with pytest.raises(NotFound):
        c.vms.get("web1")


def test_errors_are_raised_as_classes(client: Client, stack_url: str) -> None:
    with pytest.raises(NotFound) as missing:
        client.vms.get("nope")
    assert (missing.value.http_status, missing.value.context) == (
        404,
        {"kind": "vm", "ref": "nope"},
    )

    with pytest.raises(NoHostAvailable) as full:
        client.vms.create("huge", image="tiny", cpus=1, memory_mb=SIM_HOST_MEMORY_MB + 1)
    hosts = full.value.context["hosts"]
    assert sorted(h["host_name"] for h in hosts) == [f"sim-{i}" for i in range(SIM_HOSTS)]
    for h in hosts:
        assert any(re.match(r"free memory \d+ MiB < 131073 MiB requested", r) for r in h["reasons"])

    client.vms.create("dup", image="tiny", cpus=1, memory_mb=64, start=False).wait()
    with pytest.raises(NameTaken):
        client.vms.create("dup", image="tiny", cpus=1, memory_mb=64)
    with pytest.raises(InvalidInput):  # checked before anything is sent
        client.vms.create("bad", image="tiny", cpus=0, memory_mb=64)
    with pytest.raises(Unauthenticated):
        Client.login(stack_url, "admin", "wrong password")
    with pytest.raises(CorralError) as unknown_image:
        client.vms.create("orphan", image="no-such-image", cpus=1, memory_mb=64)
    assert isinstance(unknown_image.value, NotFound)
    client.vms.delete("dup").wait()


def test_pages_and_iter(client: Client) -> None:
    names = [f"page-{i}" for i in range(7)]
    ops = [client.vms.create(n, image="tiny", cpus=1, memory_mb=64, start=False) for n in names]
    for op in ops:
        op.wait()
    try:
        first = client.vms.list(limit=3, sort="name", status="stopped")
        assert (first.total, first.limit, first.offset) == (7, 3, 0)
        assert [v.name for v in first.items] == names[:3]
        last = client.vms.list(limit=3, offset=6, sort="name", status="stopped")
        assert [v.name for v in last.items] == names[6:]
        newest_first = [v.name for v in client.vms.iter(page_size=2, sort="-name")]
        assert newest_first == names[::-1]
    finally:
        for op in [client.vms.delete(n) for n in names]:
            op.wait()
    assert client.vms.list().total == 0


async def test_async_client(stack_url: str, client: Client) -> None:
    async with await AsyncClient.login(stack_url, "admin", ADMIN_PASSWORD) as c:
        op = await c.vms.create("async1", image="tiny", cpus=1, memory_mb=128)
        states: list[str] = []
        await op.wait(timeout=30, on_progress=lambda m: states.append(m.status))
        assert states[-1] == "succeeded"
        assert [v.name async for v in c.vms.iter()] == ["async1"]
        await (await c.vms.delete("async1")).wait()
        with pytest.raises(NotFound):
            await c.vms.get("async1")


def test_rest_with_curl_as_the_readme_shows(stack_url: str, client: Client) -> None:
    if missing := [tool for tool in ("curl", "jq") if shutil.which(tool) is None]:
        pytest.skip(f"the README's REST example needs {' and '.join(missing)} (apt-get install)")
    script = (
        readme_block("sh", "auth/login")
        .replace("https://127.0.0.1:8443", stack_url)
        .replace("…", ADMIN_PASSWORD)
    )
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert set(page) == {"items", "total", "limit", "offset"}

    def curl(*args: str) -> tuple[int, str]:
        """HTTP status and body of an authenticated curl call."""
        auth = f"Authorization: Bearer {client.token}"
        cmd = ["curl", "-sS", "-w", "\n%{http_code}", "-H", auth, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        body, _, status = out.rpartition("\n")
        return int(status), body

    spec = json.dumps({"name": "curl1", "image": "tiny", "cpus": 1, "memory_mb": 64})
    status, body = curl(
        "-H", "content-type: application/json", "-d", spec, f"{stack_url}/api/v1/vms"
    )
    assert status == 202, body
    status, body = curl(f"{stack_url}/api/v1/operations/{json.loads(body)['id']}?wait=30")
    assert (status, json.loads(body)["status"]) == (200, "succeeded")
    settled(client, "curl1", "running")
    status, body = curl(f"{stack_url}/api/v1/openapi.json")
    assert status == 200 and "/api/v1/vms" in json.loads(body)["paths"]
    status, body = curl(f"{stack_url}/api/v1/docs")
    assert status == 200 and "<html" in body.lower()
    client.vms.delete("curl1").wait()


def test_a_late_power_event_does_not_undo_a_newer_operation(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's power events travel apart from task results; a slow link delivers them late.

    Here the server takes 1 s to receive each event batch: the ``stopped`` event of ``stop`` lands
    after ``start`` has finished. The VM must still show ``running``, not ``stopped`` for a while
    (during which ``reboot`` or ``pause`` would be refused with ``invalid_state``).
    """
    client.vms.create("late1", image="tiny", cpus=1, memory_mb=64).wait()
    settled(client, "late1", "running")
    record_events = hosts.record_events

    async def slow_link(**kwargs: Any) -> None:
        await asyncio.sleep(1.0)
        await record_events(**kwargs)

    monkeypatch.setattr(hosts, "record_events", slow_link)
    try:
        client.vms.stop("late1").wait()
        time.sleep(EVENT_WINDOW_S + 0.1)  # past the agent's event batching window: two batches
        client.vms.start("late1").wait()
        seen = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            seen.append(client.vms.get("late1").status.value)
            time.sleep(0.02)
    finally:
        monkeypatch.undo()
        client.vms.delete("late1").wait()
    assert set(seen) == {"running"}, f"statuses seen after start finished: {seen}"
