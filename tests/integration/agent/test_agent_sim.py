"""The composition root with the real simulator: /sim/<i> mounts, TLS both ways, restarts."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from corral.agent.app import build_runtimes, start
from corral.agent.reconcile import REDEFINED
from corral.agent.settings import AgentSettings
from corral.util.tls import ensure_self_signed, pinned_context
from tests.integration.agent.conftest import FakeServer, serve_fake

TOKENS = ["a" * 40, "b" * 40]


def settings(tmp_path: Path, *, tls: bool = False, hosts: int = 2) -> AgentSettings:
    return AgentSettings(
        data_dir=tmp_path / "agent",
        host="127.0.0.1",
        port=0,
        driver="simulator",
        sim_hosts=hosts,
        tls=tls,
        heartbeat_interval=0.3,
        fault_injection=True,
    )


def define(task_id: str, vm_id: str) -> dict[str, object]:
    spec = {"vm_id": vm_id, "name": vm_id, "cpus": 2, "memory_mb": 256, "disk_gb": 1}
    return {
        "task_id": task_id,
        "payload": {"kind": "vm.define", "spec": {**spec, "vnc_password": "p"}},
    }


async def test_sim_hosts_are_separate_mounts(tmp_path: Path, fake_server: FakeServer) -> None:
    runtimes = build_runtimes(settings(tmp_path))
    assert list(runtimes) == ["/sim/0", "/sim/1"]
    handle = await start(settings(tmp_path), runtimes=runtimes)
    try:
        assert handle.url(1) == f"http://127.0.0.1:{handle.port}/sim/1"
        async with httpx.AsyncClient(timeout=10) as c:
            root = (await c.get(handle.url(0).removesuffix("/sim/0") + "/v1/health")).json()
            assert root["hosts"] == ["/sim/0", "/sim/1"]
            for i, token in enumerate(TOKENS):
                body = {"host_id": f"h{i}", "token": token, "server_url": fake_server.url}
                r = await c.post(f"{handle.url(i)}/v1/attach", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["facts"]["driver"] == "simulator"
            # Tokens are per host.
            wrong = {"Authorization": f"Bearer {TOKENS[0]}"}
            assert (await c.get(f"{handle.url(1)}/v1/vms", headers=wrong)).status_code == 401
            auth = {"Authorization": f"Bearer {TOKENS[1]}"}
            r = await c.post(f"{handle.url(1)}/v1/tasks", json=define("d1", "vm-1"), headers=auth)
            assert r.json()["state"] == "succeeded", r.text
            # A fault injected in the simulator's own operation fails the task.
            fault = {"op": "vm.start", "code": "driver_error"}
            await c.post(f"{handle.url(1)}/v1/debug/faults", json=fault, headers=auth)
            start_task = {"task_id": "s1", "payload": {"kind": "vm.start", "vm_id": "vm-1"}}
            r = await c.post(f"{handle.url(1)}/v1/tasks", json=start_task, headers=auth)
            assert r.json()["error"]["code"] == "driver_error"
        await fake_server.wait(
            lambda: {hb.host_id for _, hb in fake_server.heartbeats} == {"h0", "h1"}
        )
    finally:
        await handle.stop()


async def test_tls_both_ways_and_restart_redefines(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    ensure_self_signed(cert, key, common_name="fake-server")
    async with serve_fake(FakeServer(), certfile=cert, keyfile=key) as server:
        handle = await start(settings(tmp_path, tls=True, hosts=1))
        try:
            assert handle.cert_pem is not None and handle.url().startswith("https://")
            verify = pinned_context(handle.cert_pem)
            async with httpx.AsyncClient(verify=verify, timeout=10) as c:
                body = {
                    "host_id": "h0",
                    "token": TOKENS[0],
                    "server_url": server.url,
                    "server_cert_pem": cert.read_text(),
                }
                assert (await c.post(f"{handle.url()}/v1/attach", json=body)).status_code == 200
                auth = {"Authorization": f"Bearer {TOKENS[0]}"}
                r = await c.post(
                    f"{handle.url()}/v1/tasks", json=define("d1", "vm-1"), headers=auth
                )
                assert r.json()["state"] == "succeeded"
            await server.wait(lambda: len(server.heartbeats) >= 1)  # pinned TLS to the server
            async with httpx.AsyncClient(verify=ssl.create_default_context(), timeout=5) as c:
                try:
                    await c.get(f"{handle.url()}/v1/health")
                    raise AssertionError("an unpinned client trusted the self-signed agent")
                except httpx.ConnectError:
                    pass
        finally:
            await handle.stop()

        # A new process: the simulator forgot its VMs, the spec store did not.
        handle = await start(settings(tmp_path, tls=True, hosts=1))
        try:
            async with httpx.AsyncClient(
                verify=pinned_context(handle.cert_pem or ""), timeout=10
            ) as c:
                auth = {"Authorization": f"Bearer {TOKENS[0]}"}
                vms = (await c.get(f"{handle.url()}/v1/vms", headers=auth)).json()
                assert vms == [{"vm_id": "vm-1", "power_state": "stopped", "drift": [REDEFINED]}]
                r = await c.post(
                    f"{handle.url()}/v1/tasks", json=define("d1", "vm-2"), headers=auth
                )
                assert r.json()["task_id"] == "d1" and r.json()["state"] == "succeeded"
                ids = [
                    v["vm_id"] for v in (await c.get(f"{handle.url()}/v1/vms", headers=auth)).json()
                ]
                assert ids == ["vm-1"]  # the duplicate "d1" did not define vm-2
        finally:
            await handle.stop()
