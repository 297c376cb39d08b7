"""``corral up --driver simulator --sim-hosts 5 --http`` as a subprocess, driven with the CLI; and
the help of every ``corral`` role."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.up import untraversable_parent
from tests.e2e.processes import CORRAL, Cli, UpProcess, free_port, start_up, user_env

SIM_HOSTS = 5


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    args = ["--driver", "simulator", "--sim-hosts", str(SIM_HOSTS), "--http"]
    args += ["--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
    args += ["--agent-port", str(free_port())]
    process = start_up(*args, log=tmp_path / "up.log", env=user_env(), timeout=60)
    try:
        yield process
    finally:
        process.kill()


def test_five_simulated_hosts_take_a_vm(up: UpProcess, tmp_path: Path) -> None:
    assert up.url.startswith("http://127.0.0.1:")
    assert (up.driver, up.hosts) == ("simulator", SIM_HOSTS)
    assert up.password
    cli = Cli(user_env(CORRAL_CONFIG_DIR=str(tmp_path / "config"), CORRAL_PASSWORD=up.password))
    login = cli.run("login", up.url)
    assert login.stdout.startswith(f"Logged in to {up.url} as admin")
    assert login.stderr == ""  # plain http: no certificate to pin

    hosts = cli.json("host", "list")["items"]
    assert sorted(h["name"] for h in hosts) == [f"sim-{i}" for i in range(SIM_HOSTS)]
    assert {h["status"] for h in hosts} == {"connected"}

    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    assert cli.run("image", "import", "tiny", str(disk)).stdout.startswith("Image tiny imported")
    created = cli.run("vm", "create", "web1", "--image", "tiny", "--cpus", "1", "--memory", "256")
    assert re.fullmatch(r"VM web1 created \([0-9a-f]{32}\) on sim-\d: running\.\n", created.stdout)
    table = cli.run("vm", "list").stdout.splitlines()
    assert table[2].split()[0] == "web1" and table[2].split()[2] == "running"
    no_size = cli.run("vm", "create", "web2", "--image", "tiny", expect=2)
    assert no_size.stderr == "Error [invalid_input]: give cpus and memory_mb, or an offering\n"
    bad_size = cli.run("vm", "create", "web2", "--image", "tiny", "--cpus", "1", "--memory", "0", expect=2)  # fmt: skip
    assert "Invalid value for '--memory': '0': the size must be positive" in bad_size.stderr

    op_id = cli.run("vm", "stop", "web1", "--no-wait").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", op_id)
    waited = cli.run("op", "wait", op_id).stdout
    assert waited == f"Operation {op_id} (vm.stop) succeeded.\n"

    refused = cli.run("vm", "create", "huge", "--image", "tiny", "--cpus", "1", "--memory", "1T", expect=1)  # fmt: skip
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("Error [no_host_available]: no host fits 1 vCPUs, 1048576 MiB")
    assert lines[1] == "Hosts:"
    reasons = dict(line.strip().split(": ", 1) for line in lines[2 : 2 + SIM_HOSTS])
    assert sorted(reasons) == [f"sim-{i}" for i in range(SIM_HOSTS)]
    assert all("< 1048576 MiB requested" in why for why in reasons.values())

    code, rest = up.stop(signal.SIGTERM)
    assert code == 0 and rest == ["stopping (VMs keep running)…"]


def test_more_hosts_as_the_readme_shows(up: UpProcess, tmp_path: Path) -> None:
    """``corral agent`` on "another server" (HTTPS, self-signed), added with ``corral host add``."""
    port = free_port()
    log = tmp_path / "agent.log"
    with log.open("wb") as err:
        agent = subprocess.Popen(
            [str(CORRAL), "agent", "--driver", "simulator", "--data-dir", str(tmp_path / "agent"),
             "--port", str(port), "--host", "127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=user_env(),
        )  # fmt: skip
    try:
        assert up.password
        cli = Cli(user_env(CORRAL_CONFIG_DIR=str(tmp_path / "config"), CORRAL_PASSWORD=up.password))
        cli.run("login", up.url, "--user", "admin")
        cli.run("zone", "create", "dc1")
        cli.run("cluster", "create", "c1", "--zone", "dc1")
        url = f"https://127.0.0.1:{port}/sim/0"  # a simulated host; a libvirt agent serves at /
        deadline = time.monotonic() + 30
        while (added := cli.run("host", "add", url, "--cluster", "c1", expect=None)).returncode:
            assert time.monotonic() < deadline, f"{added.stderr}\n{log.read_text()[-2000:]}"
            time.sleep(0.5)  # the agent is still starting
        assert re.fullmatch(r"Host \S+ added \([0-9a-f]{32}\): connected\.\n", added.stdout)
        host = next(h for h in cli.json("host", "list")["items"] if h["url"] == url)
        assert host["status"] == "connected"
        cluster = cli.json("cluster", "show", "c1")
        assert host["cluster_id"] == cluster["id"]
    finally:
        up.stop(signal.SIGINT)  # first: the server's open connections hold the agent's exit back
        agent.send_signal(signal.SIGINT)
        assert agent.wait(30) == 0, log.read_text()[-2000:]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--help",), "Corral: run virtual machines"),
        (("up", "--help"), "--sim-hosts"),
        (("agent", "-h"), "--data-dir"),  # -h too, on a command loaded only when used
        (("server", "--help"), "--public-url"),
        (("vm", "--help"), "resize"),
    ],
)
def test_help(args: tuple[str, ...], needle: str) -> None:
    done = Cli(user_env()).run(*args)
    assert "Usage: corral" in done.stdout and needle in done.stdout, done.stdout


def test_a_data_dir_qemu_cannot_reach_is_named(tmp_path: Path) -> None:
    """What ``corral up`` (libvirt driver) warns about: a parent without ``o+x``."""
    closed = tmp_path / "home"
    (closed / "corral").mkdir(parents=True)
    closed.chmod(0o700)
    assert untraversable_parent(closed / "corral" / "data" / "agent") == closed
    closed.chmod(0o711)
    assert untraversable_parent(closed / "corral" / "data" / "agent") in (None, *closed.parents)
