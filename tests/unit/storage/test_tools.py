"""run_tool: timeouts and cancellation kill the process, secrets never reach errors."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from corral.agent.storage.tools import run_tool
from corral.api.errors import StorageError


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_output_and_exit_status() -> None:
    done = await run_tool(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "in", "err")
    with pytest.raises(StorageError) as err:
        await run_tool(["sh", "-c", "echo broken >&2; exit 3"])
    assert err.value.context["returncode"] == 3
    assert "broken" in err.value.message


async def test_a_timeout_kills_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(StorageError) as err:
        await run_tool(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=0.5)
    assert err.value.context["reason"] == "timeout"
    assert not alive(int(pidfile.read_text()))


async def test_cancelling_the_caller_kills_the_process(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    task = asyncio.create_task(run_tool(["sh", "-c", f"echo $$ > {fifo}; exec sleep 60"]))
    pid = int(await asyncio.to_thread(fifo.read_text))
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)


async def test_secrets_are_cut_from_errors() -> None:
    secret = "AQBsecretsecretsecret=="
    with pytest.raises(StorageError) as err:
        await run_tool(["sh", "-c", f"echo bad key {secret} >&2; exit 1", secret], secrets=[secret])
    assert secret not in str(err.value) + repr(err.value.context)
    assert "bad key ***" in err.value.message


async def test_a_missing_tool_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as err:
        await run_tool([str(tmp_path / "nope")])
    assert "cannot run nope" in err.value.message
