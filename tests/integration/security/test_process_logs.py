"""``corral server`` and ``corral agent`` as processes at ``--log-level debug``: the generated admin
password is printed once to the terminal (stdout) and never logged (stderr); a login, a failed
login and adding the agent as a host log none of their secrets; URL-encoded secrets are masked."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from pathlib import Path

import httpx

from corral.server.agents import host_tokens
from corral.server.secretbox import SecretBox, load_master_keys
from corral.util.redact import MASK, redact_text
from tests.integration.security.conftest import leaks
from tests.support.processes import CORRAL, free_port

WRONG_PASSWORD = "Wrong-Guess-Pass-52"


async def healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while True:
            assert proc.returncode is None, f"exited at start-up: {url}"
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert loop.time() < deadline, f"not healthy: {url}"
            await asyncio.sleep(0.05)


async def run(argv: list[str], out: Path, err: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(*argv, stdout=stdout, stderr=stderr, env=env)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_processes_print_the_admin_password_and_log_no_secret(tmp_path: Path) -> None:
    data, port, agent_port = tmp_path / "server", free_port(), free_port()
    server = await run(
        [CORRAL, "server", "--http", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data), "--log-level", "debug"],
        tmp_path / "server.out", tmp_path / "server.err",
    )  # fmt: skip
    agent = await run(
        [CORRAL, "agent", "--http", "--host", "127.0.0.1", "--port", str(agent_port),
         "--data-dir", str(tmp_path / "agent"), "--driver", "simulator", "--sim-hosts", "1",
         "--log-level", "debug"],
        tmp_path / "agent.out", tmp_path / "agent.err",
    )  # fmt: skip
    secrets: dict[str, str] = {"wrong password": WRONG_PASSWORD}
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        await healthy(f"{base}/health", server)
        await healthy(f"http://127.0.0.1:{agent_port}/sim/0/v1/health", agent)
        printed = re.search(
            r"Admin password \(shown once\): (\S+)", (tmp_path / "server.out").read_text()
        )
        assert printed is not None
        secrets["admin password"] = printed[1]
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            bad = {"username": "admin", "password": WRONG_PASSWORD}
            assert (await c.post("/auth/login", json=bad)).status_code == 401
            r = await c.post("/auth/login", json={"username": "admin", "password": printed[1]})
            assert r.status_code == 200, r.text
            secrets["bearer token"] = r.json()["token"]
            c.headers["Authorization"] = f"Bearer {r.json()['token']}"
            for path, body in (
                ("/zones", {"name": "z"}),
                ("/clusters", {"name": "c", "zone": "z"}),
                ("/hosts", {"url": f"http://127.0.0.1:{agent_port}/sim/0", "cluster": "c"}),
            ):
                r = await c.post(path, json=body)
                assert r.status_code == 202, r.text
                op = (await c.get(f"/operations/{r.json()['id']}", params={"wait": 60})).json()
                assert op["status"] == "succeeded", op
            # a secret in a query string (URL-encoded): refused, and masked wherever logged
            r = await c.get("/hosts", params={"q": f"token={secrets['bearer token']}"})
            assert 400 <= r.status_code < 500
    finally:
        await stop(agent)
        await stop(server)
    box = SecretBox(load_master_keys(data_dir=data))
    conn = sqlite3.connect(data / "corral.db")
    try:
        rows = conn.execute("SELECT id, token_sealed FROM hosts").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    host_id, sealed = rows[0]
    secrets["host token"] = box.open(sealed, host_tokens.token_context(host_id))
    secrets["master key"] = box.current.to_b64()

    out = (tmp_path / "server.out").read_text()
    assert out.count(secrets["admin password"]) == 1  # printed once, for the operator
    for name in ("server.err", "agent.err", "agent.out"):
        logs = (tmp_path / name).read_text(errors="replace")
        if name == "server.err":
            assert " DEBUG " in logs  # really at debug
        if name == "agent.err":
            assert "enrollment as host" in logs
        assert leaks(logs, secrets) == [], (
            name,
            [ln for ln in logs.splitlines() if leaks(ln, secrets)],
        )
    assert leaks(out.replace(secrets["admin password"], ""), secrets) == []


def test_url_encoded_secrets_are_masked() -> None:
    line = "GET /api/v1/hosts?q=name%3Dweb%20and%20token%3Ds3cr3t&password%3A%22pw%22 200"
    clean = redact_text(line)
    assert "s3cr3t" not in clean and "pw%22" not in clean and "name%3Dweb" in clean
    assert clean.count(MASK) == 2


async def test_up_prints_the_admin_password_and_never_logs_it(tmp_path: Path) -> None:
    port = free_port()
    up = await run(
        [CORRAL, "up", "--http", "--host", "127.0.0.1", "--port", str(port),
         "--agent-port", str(free_port()), "--driver", "simulator",
         "--data-dir", str(tmp_path / "data"), "--log-level", "debug"],
        tmp_path / "up.out", tmp_path / "up.err",
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        await healthy(f"{base}/health", up)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while "Log in with" not in (tmp_path / "up.out").read_text():
            assert loop.time() < deadline and up.returncode is None
            await asyncio.sleep(0.05)
        printed = re.search(
            r"Admin password \(shown once\): (\S+)", (tmp_path / "up.out").read_text()
        )
        assert printed is not None
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            r = await c.post("/auth/login", json={"username": "admin", "password": printed[1]})
            assert r.status_code == 200, r.text
            token = r.json()["token"]
    finally:
        await stop(up)
    logs = (tmp_path / "up.err").read_text(errors="replace")
    assert " DEBUG " in logs or "DEBUG " in logs
    assert leaks(logs, {"admin password": printed[1], "token": token}) == []
