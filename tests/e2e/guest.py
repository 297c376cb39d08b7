"""Watch the real guests of an end-to-end test through libvirt: domains, serial log, guest agent."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

URI = "qemu:///system"
READY = "GUEST-READY"


def open_conn() -> Any:
    """A connection to the system libvirtd (``libvirt.libvirtError`` if it is not there)."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raise errors, do not print them
    return libvirt.open(URI)


def domain_of(conn: Any, vm_id: str) -> Any:
    """The libvirt domain of a Corral VM (named ``corral-<vm id>``)."""
    return conn.lookupByName(f"corral-{vm_id}")


def domain_exists(conn: Any, vm_id: str) -> bool:
    try:
        domain_of(conn, vm_id)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def state(dom: Any) -> int:
    """The domain's state, a ``libvirt.VIR_DOMAIN_*`` constant."""
    return int(dom.state()[0])


def sizes(dom: Any, *, inactive: bool = False) -> tuple[int, int]:
    """``(vcpus, memory MiB)`` of the running domain, or of its persistent definition."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    root = ET.fromstring(dom.XMLDesc(flags))
    vcpus = int(root.findtext("vcpu") or 0)
    memory = root.find("memory")
    assert memory is not None and memory.get("unit", "KiB") == "KiB"
    return vcpus, int(memory.text or 0) // 1024


def serial_log(dom: Any) -> Path:
    """The file the guest's serial console is written to (from the domain XML)."""
    root = ET.fromstring(dom.XMLDesc(0))
    source = root.find("./devices/serial/source")
    assert source is not None and source.get("path"), "the domain has no file serial console"
    return Path(str(source.get("path")))


def ready_count(log: Path) -> int:
    """How many times the guest printed ``GUEST-READY`` since the log was (re)started."""
    return log.read_bytes().count(READY.encode()) if log.exists() else 0


def wait_ready(log: Path, *, more_than: int = 0, timeout: float = 90) -> int:
    """Wait until the serial log holds more than ``more_than`` ``GUEST-READY`` lines (a log that
    was truncated by a new boot counts from zero); return the count."""
    deadline = time.monotonic() + timeout
    seen = ready_count(log)
    while time.monotonic() < deadline:
        now = ready_count(log)
        if now > more_than or (now > 0 and now < seen):
            return now
        seen = now
        time.sleep(0.2)
    tail = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else "(no log)"
    raise AssertionError(f"no new {READY} in {log} within {timeout} s; tail:\n{tail}")


def agent_command(dom: Any, command: str, timeout: int = 5) -> str:
    """Send one guest agent command (``libvirt.libvirtError`` if the agent does not answer)."""
    return str(libvirt_qemu.qemuAgentCommand(dom, command, timeout, 0))


def agent_ping(dom: Any, timeout: float = 30) -> str:
    """``guest-ping`` through libvirt, retried until the guest agent answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return agent_command(dom, '{"execute":"guest-ping"}')
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def watch_shutoff(dom: Any, poll: float = 0.05) -> Iterator[dict[str, float]]:
    """Poll the domain's state in a thread; ``result["at"]`` is the monotonic time it was first
    seen shut off (set once it happened)."""
    result: dict[str, float] = {}
    done = threading.Event()

    def poll_state() -> None:
        while not done.is_set():
            if state(dom) == libvirt.VIR_DOMAIN_SHUTOFF:
                result["at"] = time.monotonic()
                return
            time.sleep(poll)

    thread = threading.Thread(target=poll_state, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


def remove_domains_under(conn: Any, directory: Path) -> list[str]:
    """Destroy and undefine every domain whose definition mentions ``directory`` (the disks and
    serial logs of a test's ``corral up`` live there); their names."""
    removed = []
    for dom in conn.listAllDomains(0):
        try:
            if str(directory) not in dom.XMLDesc(0):
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            continue
        removed.append(dom.name())
    return removed
