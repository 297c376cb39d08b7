"""VM NICs on the host's Open vSwitch (the system instance, userspace datapath) with a real TCG
guest (``$CORRAL_TEST_IMAGE``), through the agent's tasks: a VM defined with a virtio NIC on a
VLAN of a netdev bridge talks to a namespace "peer" on the same VLAN (ping both ways, TCP
through conntrack flows that drop invalid packets: the guest must not offload its transmit
checksums), its inbound limit holds, its OVS port carries the tag and ``iface-id``; a second
NIC is hot-plugged into the running guest and unplugged again, an e1000 NIC too (the tiny
guest's kernel has no e1000 driver: only QEMU, libvirt and OVS are checked), and a NIC is
attached to the stopped VM's definition only.

The bridge is a fresh one per test (``cbr-<hex>``; NICs name their bridge, ``br-int`` is only
the default), so parallel runs and a real ``br-int`` are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.agent.compute.libvirt.naming import domain_uuid
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.api.agent import (
    NicAttachTask,
    NicDetachTask,
    NicSpec,
    VmDefine,
    VmPower,
    VmSpec,
    nic_interface_id,
)
from corral.api.errors import CorralError
from tests.integration.libvirt.libvirt_itest import qcow2
from tests.integration.libvirt.test_libvirt_volumes import Guest, until
from tests.support.ovs import (
    NsGuest,
    SystemOvs,
    add_system_guest,
    remove_guest,
    system_bridge,
)
from tests.unit.agent.fakes import FakeVolumes

pytestmark = pytest.mark.libvirt

TAG = 100
MTU = 1400
INBOUND_KBPS = 1600
OUTBOUND_KBPS = 800
ZONE = 7
CONNTRACK_FLOWS = f"""\
table=0,priority=100,ip,actions=ct(table=1,zone={ZONE})
table=0,priority=0,actions=NORMAL
table=1,priority=100,ct_state=+trk+inv,ip,actions=drop
table=1,priority=90,ct_state=+trk+new,ip,actions=ct(commit,zone={ZONE}),NORMAL
table=1,priority=0,actions=NORMAL
"""
"""Stateful switching as the NIC firewall does it: conntrack drops what it finds invalid
(e.g. TCP with a bad checksum), the rest is switched with the NORMAL action."""


@pytest.fixture
def bridge(system_ovs: SystemOvs) -> Iterator[str]:
    with system_bridge(system_ovs, f"cbr-{secrets.token_hex(3)}", flows=CONNTRACK_FLOWS) as br:
        yield br


@pytest.fixture
def subnet() -> str:
    """``10.a.b`` of a /24 for this test."""
    return f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"


@pytest.fixture
def peer(system_ovs: SystemOvs, bridge: str, subnet: str) -> Iterator[NsGuest]:
    guest = add_system_guest(system_ovs, bridge, f"{subnet}.1/24", random_mac(), tag=TAG, mtu=MTU)
    yield guest
    remove_guest(guest)


def random_mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def new_nic(bridge: str, **kw: Any) -> NicSpec:
    return NicSpec(nic_id=uuid.uuid4().hex, mac=random_mac(), bridge=bridge, **kw)


def xml_of(conn: Any, vm_id: str, *, live: bool) -> ET.Element:
    dom = conn.lookupByName(f"corral-{vm_id}")
    return ET.fromstring(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))


def interface(root: ET.Element, nic_id: str) -> ET.Element | None:
    alias = f"ua-nic-{nic_id}"
    return next(
        (
            i
            for i in root.iterfind("devices/interface")
            if i.find(f"alias[@name='{alias}']") is not None
        ),
        None,
    )


def has_alias(root: ET.Element, nic_id: str) -> bool:
    return interface(root, nic_id) is not None


class HttpServer:
    """``python3 -m http.server`` inside the peer's namespace, serving one file ``f``."""

    def __init__(self, peer: NsGuest, size: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="corral-test-www-"))
        (self.dir / "f").write_bytes(secrets.token_bytes(size))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", peer.ns, "python3", "-m", "http.server", "8081"],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()


async def test_vm_nics_on_open_vswitch_cold_and_hot_plugged(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    test_image: Path,
    system_conn: Any,
    system_ovs: SystemOvs,
    bridge: str,
    subnet: str,
    peer: NsGuest,
) -> None:
    started = time.monotonic()
    vm = new_vm_id()
    specs = SpecStore(workdir / "vms")
    specs.open()
    root = FakeVolumes(workdir)
    qcow2(Path(root.disk_path(vm)), backing=test_image)

    async def fetch(*_: object) -> None:
        raise AssertionError("no image is fetched here")

    ex = TaskExecutor(
        compute=driver, volumes=root, specs=specs, faults=FaultPlan(), fetch=fetch, drift={}
    )
    nic = new_nic(bridge, tag=TAG, mtu=MTU, inbound_kbps=INBOUND_KBPS, outbound_kbps=OUTBOUND_KBPS)
    spec = VmSpec(
        vm_id=vm, name=vm, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw", nics=[nic]
    )
    ovs = system_ovs
    try:
        await ex.run(VmDefine(spec=spec))
        await ex.run(VmPower(kind="vm.start", vm_id=vm))

        # The NIC's OVS port: the tap libvirt made, on the VLAN, with the NIC's identity.
        assert nic.port in ovs.vsctl("list-ports", bridge).split()
        assert ovs.get("port", nic.port, "tag") == str(TAG)
        assert ovs.get("interface", nic.port, "external_ids:iface-id") == nic_interface_id(
            nic.nic_id
        )
        assert ovs.get("interface", nic.port, "external_ids:attached-mac") == nic.mac
        # <bandwidth>: inbound = an HTB ceiling on the port, outbound = ingress policing.
        qos = ovs.get("port", nic.port, "qos")
        queue = ovs.vsctl("get", "qos", qos, "queues").strip("{}\n").split("=")[1]
        assert ovs.get("queue", queue, "other_config:max-rate") == str(INBOUND_KBPS * 1000)
        assert ovs.get("interface", nic.port, "ingress_policing_rate") == str(OUTBOUND_KBPS)

        dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}")
        guest = Guest(dom)
        await asyncio.to_thread(guest.wait_for_agent, 90)
        booted = time.monotonic()

        async def sh(script: str) -> str:
            return await asyncio.to_thread(guest.sh, script)

        async def iface_of(mac: str) -> str:
            return await sh(
                f'for i in /sys/class/net/*; do [ "$(cat $i/address)" = {mac} ]'
                " && echo ${i##*/}; done; true"
            )

        # No DHCP server here: stop the guest's client (it would flush the address), then
        # give the NIC a static address through the guest agent.
        await sh(
            "for i in $(seq 50); do pidof udhcpc >/dev/null && break; sleep 0.1; done;"
            " killall udhcpc 2>/dev/null; true"
        )
        eth = await iface_of(nic.mac)
        assert eth, await sh("ls /sys/class/net")
        await sh(
            f"ip addr flush dev {eth}; ip addr add {subnet}.2/24 dev {eth}; ip link set {eth} up"
        )
        assert await sh(f"cat /sys/class/net/{eth}/mtu") == str(MTU)  # virtio host_mtu
        # VIRTIO_NET_F_CSUM (feature bit 0) off: the guest computes its checksums itself.
        features = await sh(f"cat /sys/class/net/{eth}/device/features")
        assert features[0] == "0", features

        # Ping both ways on the VLAN.
        await sh(f"ping -c 3 -W 2 {peer.ip}")
        assert await asyncio.to_thread(peer.ping, f"{subnet}.2", 3)

        # TCP through conntrack: it only opens if the guest's checksums are right.
        await sh("mkdir -p /www; dd if=/dev/urandom of=/www/f bs=1k count=200 2>/dev/null;"
                 " httpd -p 8080 -h /www")  # fmt: skip
        fetched = await asyncio.to_thread(
            peer.sh, "python3", "-c",
            f"import urllib.request,time; t=time.time(); n=len(urllib.request.urlopen("
            f"'http://{subnet}.2:8080/f', timeout=20).read()); print(n, time.time()-t)",
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        size, seconds = fetched.stdout.split()
        assert int(size) == 200 * 1024
        outbound_kbps = int(size) * 8 / float(seconds) / 1000

        # The inbound limit holds (HTB on the tap): the guest downloads from the peer.
        server = HttpServer(peer, 200_000)
        try:
            await asyncio.sleep(0.5)
            times = await sh(
                "a=$(cut -d' ' -f1 /proc/uptime);"
                f" wget -q -O /dev/null http://{peer.ip}:8081/f;"
                " b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
            )
        finally:
            server.close()
        t0, t1 = (float(x) for x in times.split())
        inbound_kbps = 200_000 * 8 / (t1 - t0) / 1000
        assert 0.6 * INBOUND_KBPS < inbound_kbps < 1.2 * INBOUND_KBPS, inbound_kbps

        # Hot-plug a second virtio NIC into the running guest, then unplug it.
        second = new_nic(bridge, tag=TAG)
        for _ in range(2):  # attached already: success
            await ex.run(NicAttachTask(vm_id=vm, nic=second))

        async def second_in_guest() -> bool:
            return bool(await iface_of(second.mac))

        await until(second_in_guest, "the guest to see the hot-plugged NIC")
        assert ovs.get("port", second.port, "tag") == str(TAG)
        assert ovs.get("interface", second.port, "external_ids:iface-id") == nic_interface_id(
            second.nic_id
        )
        assert (await driver.describe(vm))["nics"] == sorted([nic.nic_id, second.nic_id])
        stored = specs.get(vm)
        assert stored is not None and stored.spec.nics == [nic, second]
        plugged_at = time.monotonic()

        await ex.run(NicDetachTask(vm_id=vm, nic_id=second.nic_id, timeout=30))
        assert not await second_in_guest()
        assert second.port not in ovs.vsctl("list-ports", bridge).split()
        for live in (True, False):
            assert not has_alias(xml_of(system_conn, vm, live=live), second.nic_id)
        await ex.run(NicDetachTask(vm_id=vm, nic_id=second.nic_id, timeout=1))  # success
        stored = specs.get(vm)
        assert stored is not None and stored.spec.nics == [nic]

        # e1000: QEMU emulates it and libvirt plugs it; this guest has no driver for it.
        legacy = new_nic(bridge, model="e1000", tag=TAG)
        await ex.run(NicAttachTask(vm_id=vm, nic=legacy))
        assert ovs.get("port", legacy.port, "tag") == str(TAG)
        live_legacy = interface(xml_of(system_conn, vm, live=True), legacy.nic_id)
        assert live_legacy is not None
        assert live_legacy.find("model").get("type") == "e1000"  # type: ignore[union-attr]
        assert not await iface_of(legacy.mac)  # no e1000 driver in the test kernel
        await ex.run(NicDetachTask(vm_id=vm, nic_id=legacy.nic_id, timeout=30))
        assert legacy.port not in ovs.vsctl("list-ports", bridge).split()

        # The guest still talks through its first NIC.
        await sh(f"ping -c 2 -W 2 {peer.ip}")

        # Stopped: the VM's port is gone; a NIC attached now only enters the definition.
        await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
        assert nic.port not in ovs.vsctl("list-ports", bridge).split()
        cold = new_nic(bridge)
        await ex.run(NicAttachTask(vm_id=vm, nic=cold))
        assert has_alias(xml_of(system_conn, vm, live=False), cold.nic_id)
        assert cold.port not in ovs.vsctl("list-ports", bridge).split()
        await ex.run(NicDetachTask(vm_id=vm, nic_id=cold.nic_id, timeout=0))
        assert not has_alias(xml_of(system_conn, vm, live=False), cold.nic_id)
        print(
            f"\nNIC test: {time.monotonic() - started:.1f} s in all, boot to guest agent"
            f" {booted - started:.1f} s, hot-plug seen {plugged_at - booted:.1f} s after boot;"
            f" guest -> peer {outbound_kbps:.0f} kbit/s (outbound limit {OUTBOUND_KBPS},"
            f" not enforced by the userspace datapath), peer -> guest {inbound_kbps:.0f}"
            f" kbit/s (inbound limit {INBOUND_KBPS})"
        )
    finally:
        with contextlib.suppress(CorralError):
            await driver.stop(vm, force=True, timeout=0)
        ovs.forget_qos(domain_uuid(vm))
