"""The README's CLI session against a real ``corral up`` (HTTPS, libvirt driver, TCG guests).

``corral up`` and every ``corral`` command run as separate processes with a user's environment; the
guest is watched through libvirt (domain state and XML, serial console, guest agent).
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.sdk import Client
from corral.util.tls import ensure_self_signed
from tests.e2e import guest
from tests.e2e.processes import Cli, UpProcess, free_port, start_up, strip_ansi, user_env

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

VISIBLE_WITHIN = 5.0
"""The promise: every state change is visible in ``corral vm list`` within 5 s."""


@dataclass
class Session:
    """One ``corral up`` shared by the module's tests and a logged-in CLI."""

    data_dir: Path
    port: int
    agent_port: int
    up: UpProcess
    cli: Cli
    login: Any  # the CompletedProcess of ``corral login``
    imported: tuple[int, str, str] = (-1, "", "")  # ``corral image import`` in a terminal

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        return Path(self.cli.env["CORRAL_CONFIG_DIR"])

    def start_up(self) -> UpProcess:
        self.up = start_up(
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--agent-port",
            str(self.agent_port),
            log=self.data_dir.parent / "up.log",
            env=user_env(),
        )
        return self.up


@pytest.fixture(scope="module")
def session(e2e_dir: Path, test_image: Path) -> Iterator[Session]:
    """``corral up`` (fresh data dir) and ``corral login`` with the password it printed."""
    data_dir = e2e_dir / "data"
    s = Session(data_dir, free_port(), free_port(), None, None, None)  # type: ignore[arg-type]
    up = s.start_up()
    try:
        assert up.password, f"no admin password printed at first start: {up.lines}"
        s.cli = Cli(
            user_env(CORRAL_CONFIG_DIR=str(e2e_dir / "config"), CORRAL_PASSWORD=up.password)
        )
        s.login = s.cli.run("login", s.url, "--user", "admin")
        s.imported = s.cli.in_terminal("image", "import", "tiny", str(test_image))
        yield s
    finally:
        s.up.kill()


def wait_status(cli: Cli, name: str, status: str, within: float = VISIBLE_WITHIN) -> float:
    """Poll ``corral vm list -o json`` until ``name`` shows ``status``; seconds it took."""
    started = time.monotonic()
    seen = None
    while True:
        seen = cli.vm_statuses().get(name)
        if seen == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{name} is {seen!r}, not {status!r}, {within} s later")


def test_up_prints_url_password_and_driver(session: Session) -> None:
    up = session.up
    assert up.url == session.url
    assert (up.driver, up.hosts) == ("libvirt", 1)
    assert up.lines[-1] == f"Log in with: corral login {session.url} --user admin"
    assert not any("cannot open VM disks" in line for line in up.lines)  # /var/tmp is reachable
    hosts = session.cli.json("host", "list")["items"]
    assert [(h["name"], h["status"]) for h in hosts] == [("local", "connected")]


def test_login_pins_the_server_certificate(session: Session, tmp_path: Path) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", session.port))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    shown = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    assert shown in session.login.stderr and "trust on first use" in session.login.stderr
    assert session.login.stdout.startswith(f"Logged in to {session.url} as admin")
    config = session.config_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "token" in json.loads(config.read_text())
    pinned = session.config_dir / "server.pem"
    assert ssl.PEM_cert_to_DER_cert(pinned.read_text()) == ssl.PEM_cert_to_DER_cert(pem)

    with Client(session.url, json.loads(config.read_text())["token"], verify=str(pinned)) as sdk:
        assert sdk.hosts.list().total == 1  # the README: verify= takes the server's certificate

    again = session.cli.run("login", session.url, "--user", "admin")
    assert "fingerprint" not in again.stderr  # the same certificate: nothing to confirm

    # Someone else's certificate pinned for this URL (a man in the middle, from the CLI's view).
    good = pinned.read_text()
    ensure_self_signed(tmp_path / "other.crt", tmp_path / "other.key", "other")
    pinned.write_text((tmp_path / "other.crt").read_text())
    try:
        listing = session.cli.run("vm", "list", expect=1)
        assert listing.stderr.startswith("Error [internal]: cannot reach the Corral server")
        assert "CERTIFICATE_VERIFY_FAILED" in listing.stderr
        refused = session.cli.run("login", session.url, "--user", "admin", expect=1)
        assert refused.stderr.startswith("Error [forbidden]: the certificate of")
        assert "corral logout" in refused.stderr
    finally:
        pinned.write_text(good)
    session.cli.run("vm", "list")


def create_vm(cli: Cli, name: str) -> str:
    """``corral vm create NAME`` as in the README, in a terminal (the progress bar of the
    operation is drawn on it); the new VM's id."""
    args = [
        "vm",
        "create",
        name,
        "--image",
        "tiny",
        "--cpus",
        "1",
        "--memory",
        "256",
        "--disk",
        "1G",
    ]
    code, out, tty = cli.in_terminal(*args)
    assert code == 0, tty
    bar = strip_ansi(tty)
    assert re.search(r"vm\.create succeeded: .*100%", bar), bar
    m = re.fullmatch(rf"VM {name} created \((?P<id>[0-9a-f]{{32}})\) on local: running\.\n", out)
    assert m, out
    return m["id"]


def test_readme_session(session: Session, test_image: Path, libvirt_conn: Any) -> None:
    cli = session.cli
    code, out, tty = session.imported
    assert code == 0, tty
    assert re.fullmatch(r"Image tiny imported \([0-9a-f]{32}\)\.\n", out)
    bar = strip_ansi(tty)  # the progress bar drawn while the file was sent
    size_mb = f"{test_image.stat().st_size / 1e6:.1f}"
    assert f"Uploading {test_image.name}" in bar and f"{size_mb}/{size_mb} MB" in bar, bar

    vid = create_vm(cli, "web1")
    dom = guest.domain_of(libvirt_conn, vid)
    assert guest.state(dom) == libvirt.VIR_DOMAIN_RUNNING
    assert guest.sizes(dom) == (1, 256)
    kvm_broken = any(line.startswith("WARNING: KVM does not work") for line in session.up.lines)
    domain_type = "qemu" if kvm_broken else "kvm"  # TCG only where the probe guest did not run
    assert f"type='{domain_type}'" in dom.XMLDesc(0).splitlines()[0]

    table = cli.run("vm", "list").stdout.splitlines()  # a pipe: nothing cut to 80 columns
    assert table[0].split() == ["NAME", "ID", "STATUS", "POWER", "CPUS", "MEMORY", "DISK", "HOST"]
    assert table[2].split() == ["web1", vid, "running", "running", "1", "256", "MiB", "1", "GiB", "local"]  # fmt: skip
    page = json.loads(cli.run("vm", "list", "-o", "json").stdout)
    assert page["total"] == 1 and page["items"][0]["id"] == vid

    cli.run("vm", "pause", "web1")  # while it boots: pausing needs nothing from the guest
    assert cli.vm_statuses() == {"web1": "paused"}
    assert guest.state(dom) == libvirt.VIR_DOMAIN_PAUSED
    cli.run("vm", "resume", "web1")
    assert cli.vm_statuses() == {"web1": "running"}
    assert guest.state(dom) == libvirt.VIR_DOMAIN_RUNNING

    log = guest.serial_log(dom)
    assert log.is_relative_to(session.data_dir)
    boots = guest.wait_ready(log)  # the guest booted on after the pause
    assert guest.agent_ping(dom) == '{"return":{}}'

    domain_id = dom.ID()
    assert cli.run("vm", "reboot", "web1").stdout == "VM web1 rebooted.\n"
    boots = guest.wait_ready(log, more_than=boots)  # the guest really booted again...
    assert dom.ID() == domain_id  # ...in the same QEMU process
    assert cli.vm_statuses() == {"web1": "running"}

    assert cli.run("vm", "stop", "web1").stdout == "VM web1 stopped.\n"  # ACPI: the guest obeys
    assert cli.vm_statuses() == {"web1": "stopped"}
    assert guest.state(dom) == libvirt.VIR_DOMAIN_SHUTOFF
    cli.run("vm", "start", "web1")
    assert cli.vm_statuses() == {"web1": "running"}
    assert guest.state(dom) == libvirt.VIR_DOMAIN_RUNNING

    refused = cli.run("vm", "resize", "web1", "--cpus", "2", "--memory", "512", expect=1)
    assert refused.stdout == ""
    assert refused.stderr.splitlines()[0] == (
        "Error [invalid_state]: cannot resize (stop it first) VM 'web1': it is running "
        "(needs stopped)"
    )
    # --force: a guest still booting ignores the ACPI button (it would take the 60 s timeout)
    cli.run("vm", "stop", "web1", "--force")
    resized = cli.run("vm", "resize", "web1", "--cpus", "2", "--memory", "512")
    assert resized.stdout == "VM web1 resized.\n"
    (shown,) = cli.json("vm", "list")["items"]
    assert (shown["cpus"], shown["memory_mb"], shown["status"]) == (2, 512, "stopped")
    cli.run("vm", "start", "web1")
    assert guest.sizes(dom) == (2, 512)  # the guest runs with its new size

    assert cli.run("vm", "delete", "web1").stdout == "VM web1 deleted.\n"
    assert not guest.domain_exists(libvirt_conn, vid)
    assert cli.vm_statuses() == {}
    assert not list((session.data_dir / "agent" / "pool" / "vms").iterdir())


def test_guest_poweroff_and_restarts_keep_the_vm(session: Session, libvirt_conn: Any) -> None:
    cli = session.cli
    vid = create_vm(cli, "web2")
    dom = guest.domain_of(libvirt_conn, vid)
    log = guest.serial_log(dom)
    guest.wait_ready(log)
    guest.agent_ping(dom)

    # The guest powers itself off from inside: Corral notices without being asked.
    with guest.watch_shutoff(dom) as off:
        try:
            guest.agent_command(dom, '{"execute":"guest-shutdown"}')
        except libvirt.libvirtError:
            pass  # the agent may vanish before it answers
        wait_status(cli, "web2", "stopped", within=30)
    assert "at" in off, "the domain never shut off"
    lag = time.monotonic() - off["at"]
    cli.timings.append(("(guest powered off -> listed stopped)", lag))
    assert lag <= VISIBLE_WITHIN, f"stopped shown {lag:.1f} s after the guest powered off"

    cli.run("vm", "start", "web2")
    domain_id = dom.ID()

    # Stopping corral up never stops a running VM...
    code, rest = session.up.stop(signal.SIGINT)
    assert code == 0, session.up.log.read_text()[-3000:]
    assert rest == ["stopping (VMs keep running)…"]
    assert guest.state(dom) == libvirt.VIR_DOMAIN_RUNNING and dom.ID() == domain_id

    # ...and starting it again finds the VM running; the admin password is not shown again.
    up = session.start_up()
    assert up.password is None and (up.driver, up.hosts) == ("libvirt", 1)
    (shown,) = cli.json("vm", "list")["items"]
    assert (shown["name"], shown["status"], shown["power_state"]) == ("web2", "running", "running")
    assert dom.ID() == domain_id
    # the local host is connected again within a few heartbeats of the restart
    deadline = time.monotonic() + 10
    while [h["status"] for h in cli.json("host", "list")["items"]] != ["connected"]:
        assert time.monotonic() < deadline, "the local host did not reconnect after the restart"
        time.sleep(0.5)
    guest.wait_ready(log)  # the guest booted on through both restarts
    assert guest.agent_ping(dom) == '{"return":{}}'

    # Killed behind Corral's back (virsh destroy, QEMU crashed): listed as stopped too.
    dom.destroy()
    killed_at = time.monotonic()
    wait_status(cli, "web2", "stopped")
    cli.timings.append(("(domain destroyed -> listed stopped)", time.monotonic() - killed_at))

    cli.run("vm", "delete", "web2")
    assert not guest.domain_exists(libvirt_conn, vid)
    code, _ = up.stop(signal.SIGINT)
    assert code == 0


@pytest.fixture(autouse=True, scope="module")
def _print_timings(session: Session) -> Iterator[None]:
    yield
    for cmd, secs in session.cli.timings:
        print(f"TIMING {secs:6.2f} {cmd}")
