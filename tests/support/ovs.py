"""A private Open vSwitch instance for tests (its own database, sockets and pid files under one
directory; the userspace datapath), and network-namespace "guests" plugged into its bridges
through veth pairs."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def ovs_available() -> bool:
    return SCHEMA.is_file() and all(
        shutil.which(t) for t in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl")
    )


def run(*args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        list(args), check=check, capture_output=True, text=True, input=input, env=env,
        timeout=timeout,
    )  # fmt: skip


@dataclass
class Ovs:
    """One OVS instance; ``vsctl``/``ofctl``/``appctl`` talk to it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        d = self.root
        return {**os.environ, "OVS_RUNDIR": str(d / "run"), "OVS_LOGDIR": str(d / "log"),
                "OVS_DBDIR": str(d / "db"), "OVS_SYSCONFDIR": str(d / "etc")}  # fmt: skip

    @property
    def db(self) -> str:
        return f"unix:{self.root / 'run' / 'db.sock'}"

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args, env=self.env).stdout

    def ofctl(self, *args: str, input: str | None = None) -> str:
        return run("ovs-ofctl", *args, input=input, env=self.env).stdout

    def appctl(self, *args: str) -> str:
        pid = (self.root / "run" / "ovs-vswitchd.pid").read_text().strip()
        ctl = self.root / "run" / f"ovs-vswitchd.{pid}.ctl"
        return run("ovs-appctl", "-t", str(ctl), *args, env=self.env).stdout

    def start(self) -> None:
        for sub in ("run", "log", "db", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "db" / "conf.db"
        run("ovsdb-tool", "create", str(conf), str(SCHEMA), env=self.env)
        run("ovsdb-server", str(conf), f"--remote=punix:{self.root / 'run' / 'db.sock'}",
            f"--pidfile={self.root / 'run' / 'ovsdb-server.pid'}", "--detach",
            f"--log-file={self.root / 'log' / 'ovsdb-server.log'}", env=self.env)  # fmt: skip
        run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", env=self.env)
        run("ovs-vswitchd", self.db, f"--pidfile={self.root / 'run' / 'ovs-vswitchd.pid'}",
            "--detach", f"--log-file={self.root / 'log' / 'ovs-vswitchd.log'}",
            env=self.env)  # fmt: skip

    def stop(self) -> None:
        for br in self.vsctl("list-br").split():
            run("ovs-vsctl", f"--db={self.db}", "--timeout=10", "del-br", br, check=False,
                env=self.env)  # fmt: skip
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.root / "run" / f"{name}.pid"
            if pidfile.exists():
                run("kill", pidfile.read_text().strip(), check=False)


@contextmanager
def ovs_instance(root: Path) -> Iterator[Ovs]:
    ovs = Ovs(root)
    ovs.start()
    try:
        yield ovs
    finally:
        ovs.stop()


@dataclass
class NsGuest:
    """A network namespace with one interface ``eth0`` (veth) whose peer is on an OVS bridge."""

    ns: str
    ip: str
    mac: str
    peer: str

    def sh(self, *args: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run("ip", "netns", "exec", self.ns, *args, check=check, timeout=timeout)

    def ping(self, address: str, count: int = 2, source: str | None = None) -> bool:
        extra = ["-I", source] if source else []
        r = self.sh("ping", "-c", str(count), "-i", "0.2", "-W", "1", *extra, address)
        return r.returncode == 0


def add_guest(ovs: Ovs, bridge: str, cidr: str, mac: str, ofport: int) -> NsGuest:
    """A namespace guest with ``cidr`` and ``mac`` on port number ``ofport`` of ``bridge``;
    transmit checksum offload off (the userspace datapath's conntrack needs full checksums)."""
    tag = uuid.uuid4().hex[:6]
    ns, peer = f"cg-{tag}", f"cgp-{tag}"
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    guest = NsGuest(ns, cidr.split("/")[0], mac, peer)
    for cmd in (("ip", "link", "set", "eth0", "address", mac), ("ip", "addr", "add", cidr, "dev", "eth0"),
                ("ip", "link", "set", "eth0", "up"), ("ip", "link", "set", "lo", "up"),
                ("ethtool", "-K", "eth0", "tx", "off")):  # fmt: skip
        guest.sh(*cmd, check=True)
    run("ethtool", "-K", peer, "tx", "off")
    run("ip", "link", "set", peer, "up")
    ovs.vsctl("add-port", bridge, peer, "--", "set", "interface", peer,
              f"ofport_request={ofport}")  # fmt: skip
    return guest


def remove_guest(guest: NsGuest) -> None:
    run("ip", "link", "del", guest.peer, check=False)
    run("ip", "netns", "del", guest.ns, check=False)
