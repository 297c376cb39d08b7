"""VM NICs in the domain XML (taps on Open vSwitch): the contract's validation, the
``<interface>`` builder against golden files and libvirt's schema, reading NICs back, and the
driver's blocking hot-plug steps against a fake domain."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from pydantic import ValidationError

from corral.agent.compute.libvirt import nic_ops
from corral.agent.compute.libvirt.xml.compose import vm_domain
from corral.agent.compute.libvirt.xml.nic import nic_alias, nic_interface
from corral.agent.compute.libvirt.xml.parse import NicFacts, nic_facts, parse_domain
from corral.agent.compute.libvirt.xml.util import render
from corral.api.agent import (
    NicAttachTask,
    NicDetachTask,
    NicSpec,
    VmSpec,
    kbps_to_libvirt,
    nic_interface_id,
    nic_port_name,
)
from corral.api.errors import InvalidInput, InvalidState
from tests.unit.libvirt.conftest import Golden

NIC_ID = "5f0e9c1d2b3a4f6e8d7c6b5a49382716"
FULL = NicSpec(
    nic_id=NIC_ID,
    mac="02:5F:0E:9C:1D:2B",
    tag=100,
    mtu=1450,
    inbound_kbps=8000,
    outbound_kbps=4000,
)
LEGACY = NicSpec(nic_id="legacy-1", mac="0a:00:00:00:00:01", model="e1000", bridge="br-ext")
SPEC = VmSpec(
    vm_id="0f3c2a",
    name="web-1",
    cpus=1,
    memory_mb=256,
    disk_gb=1,
    vnc_password="pw",
    nics=[FULL, LEGACY],
)


def domain_xml(spec: VmSpec = SPEC) -> str:
    return vm_domain(spec, disk_path="/srv/root.qcow2", console_dir=Path("/c"), kvm=False).to_xml()


# --- the contract -------------------------------------------------------------------------------


def test_nic_defaults_port_and_interface_id_are_derived_from_the_id() -> None:
    assert FULL.mac == "02:5f:0e:9c:1d:2b"  # stored in lower case
    assert FULL.port == nic_port_name(NIC_ID) == "cn-5f0e9c1d2b3"
    assert len(FULL.port) == 14  # Linux interface names hold 15
    assert (LEGACY.model, LEGACY.tag, LEGACY.port) == ("e1000", None, "cn-legacy-1")
    assert NicSpec(nic_id="x", mac="02:00:00:00:00:01").bridge == "br-int"
    assert nic_interface_id(NIC_ID) == nic_interface_id(NIC_ID) != nic_interface_id("other")
    assert NicSpec(nic_id="x", mac="02:00:00:00:00:01", port="tap-x").port == "tap-x"


@pytest.mark.parametrize(
    "mac",
    [
        "01:00:5e:00:00:01",  # multicast
        "03:00:00:00:00:01",  # multicast, locally administered
        "00:16:3e:00:00:01",  # universally administered (a vendor's OUI)
        "02:00:00:00:00",  # five octets
        "02-00-00-00-00-01",
        "02:00:00:00:00:0g",
    ],
)
def test_only_unicast_locally_administered_macs_are_accepted(mac: str) -> None:
    with pytest.raises(ValidationError):
        NicSpec(nic_id="x", mac=mac)


@pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "52:54:00:12:34:56", "FE:FF:FF:FF:FF:FF"])
def test_locally_administered_unicast_macs_pass(mac: str) -> None:
    assert NicSpec(nic_id="x", mac=mac).mac == mac.lower()


@pytest.mark.parametrize(
    "fields",
    [
        {"port": "vnet0"},  # libvirt's own tap names: dropped from the persistent definition
        {"port": "macvtap3"},
        {"port": "a-port-name-too-long"},
        {"port": "bad port"},
        {"tag": 0},
        {"tag": 4095},
        {"nic_id": "has space"},
        {"nic_id": ""},
        {"model": "ne2k_pci"},
        {"mtu": 67},
        {"inbound_kbps": 7},
        {"bridge": "br/int"},
    ],
)
def test_bad_nic_fields_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NicSpec.model_validate({"nic_id": "x", "mac": "02:00:00:00:00:01", **fields})


@pytest.mark.parametrize(
    "other",
    [
        {"nic_id": NIC_ID, "mac": "02:00:00:00:00:09", "port": "cn-other"},
        {"nic_id": "other", "mac": FULL.mac, "port": "cn-other"},
        {"nic_id": "other", "mac": "02:00:00:00:00:09", "port": FULL.port},
    ],
)
def test_a_vm_spec_refuses_two_nics_with_one_id_mac_or_port(other: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="distinct"):
        SPEC.model_validate({**SPEC.model_dump(), "nics": [FULL.model_dump(), other]})


def test_old_specs_without_nics_still_load() -> None:
    old = SPEC.model_dump()
    del old["nics"]
    assert VmSpec.model_validate(old).nics == []


def test_nic_tasks_are_part_of_the_task_union() -> None:
    from corral.api.agent import AgentTask

    attach = AgentTask.model_validate(
        {
            "task_id": "op:1",
            "payload": {"kind": "nic.attach", "vm_id": "v", "nic": FULL.model_dump()},
        }
    )
    assert isinstance(attach.payload, NicAttachTask) and attach.payload.nic == FULL
    detach = AgentTask.model_validate(
        {"task_id": "op:2", "payload": {"kind": "nic.detach", "vm_id": "v", "nic_id": NIC_ID}}
    )
    assert isinstance(detach.payload, NicDetachTask) and detach.payload.timeout == 30.0


@pytest.mark.parametrize(
    ("kbps", "units"), [(8, 1), (9, 2), (400, 50), (1000, 125), (1_000_000, 125_000)]
)
def test_kbit_per_second_become_libvirt_kilobytes_per_second_rounded_up(
    kbps: int, units: int
) -> None:
    assert kbps_to_libvirt(kbps) == units


# --- the XML --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "nic"), [("nic_ovs_full.xml", FULL), ("nic_e1000.xml", LEGACY)])
def test_interface_element(name: str, nic: NicSpec, golden: Golden) -> None:
    golden(name, render(nic_interface(nic).element()))


def test_domain_with_nics(golden: Golden) -> None:
    golden("domain_tcg_nics.xml", domain_xml())


def test_virtio_nics_never_offload_transmit_checksums_and_legacy_models_take_no_driver() -> None:
    virtio = nic_interface(FULL).element()
    assert virtio.find("driver/host").get("csum") == "off"  # type: ignore[union-attr]
    assert virtio.find("driver/guest").get("csum") == "off"  # type: ignore[union-attr]
    assert nic_interface(LEGACY).element().find("driver") is None


def test_inbound_limit_is_average_and_peak_outbound_average_only() -> None:
    bandwidth = nic_interface(FULL).element().find("bandwidth")
    assert bandwidth is not None
    assert bandwidth.find("inbound").attrib == {"average": "1000", "peak": "1000"}  # type: ignore[union-attr]
    assert bandwidth.find("outbound").attrib == {"average": "500"}  # type: ignore[union-attr]
    unlimited = NicSpec(nic_id="x", mac="02:00:00:00:00:01", inbound_kbps=800)
    element = nic_interface(unlimited).element()
    assert element.find("bandwidth/outbound") is None
    assert element.find("bandwidth/inbound") is not None
    assert nic_interface(LEGACY).element().find("bandwidth") is None


def test_nic_alias_refuses_ids_libvirt_cannot_carry() -> None:
    assert nic_alias("a_b-1") == "ua-nic-a_b-1"
    for bad in ("", "a.b", "a b"):
        with pytest.raises(InvalidInput):
            nic_alias(bad)


@pytest.mark.skipif(not shutil.which("virt-xml-validate"), reason="virt-xml-validate missing")
def test_domain_with_nics_is_valid_libvirt_xml(tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml())
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_nics_are_read_back_by_alias() -> None:
    root = ET.fromstring(domain_xml())
    devices = root.find("devices")
    assert devices is not None
    foreign = ET.SubElement(devices, "interface", type="network")  # not Corral's: ignored
    ET.SubElement(foreign, "source", network="default")
    ET.SubElement(foreign, "alias", name="net0")
    facts = parse_domain(ET.tostring(root, encoding="unicode"))
    assert facts.nics == (
        NicFacts(
            nic_id=NIC_ID,
            mac=FULL.mac,
            model="virtio",
            bridge="br-int",
            port=FULL.port,
            tag=100,
            interface_id=nic_interface_id(NIC_ID),
            mtu=1450,
        ),
        NicFacts(
            nic_id="legacy-1",
            mac=LEGACY.mac,
            model="e1000",
            bridge="br-ext",
            port="cn-legacy-1",
            tag=None,
            interface_id=nic_interface_id("legacy-1"),
            mtu=None,
        ),
    )
    assert facts.nic("legacy-1") == facts.nics[1] and facts.nic("nope") is None
    assert parse_domain(domain_xml(SPEC.model_copy(update={"nics": []}))).nics == ()


# --- the driver's blocking steps against a fake domain ---------------------------------------


class FakeDom:
    """A domain whose persistent and live XML are element lists; records device calls."""

    def __init__(self, *, active: bool, config: list[NicSpec], live: list[NicSpec]) -> None:
        self.active = active
        self.config = list(config)
        self.live = list(live)
        self.calls: list[tuple[str, str, int]] = []

    def state(self) -> tuple[int, int]:
        if self.active:
            return libvirt.VIR_DOMAIN_RUNNING, 1
        return libvirt.VIR_DOMAIN_SHUTOFF, 1

    def XMLDesc(self, flags: int) -> str:
        nics = self.config if flags & libvirt.VIR_DOMAIN_XML_INACTIVE else self.live
        spec = SPEC.model_copy(update={"nics": nics})
        return domain_xml(spec)

    def attachDeviceFlags(self, xml: str, flags: int) -> None:
        self.calls.append(("attach", ET.fromstring(xml).find("alias").get("name", ""), flags))  # type: ignore[union-attr]

    def detachDeviceAlias(self, alias: str, flags: int) -> None:
        self.calls.append(("detach", alias, flags))


NEW = NicSpec(nic_id="new", mac="02:00:00:00:00:77")
LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG


@pytest.mark.parametrize(
    ("active", "config", "live", "flags"),
    [
        (False, [], [], CONFIG),
        (True, [], [], CONFIG | LIVE),
        (True, [NEW], [], LIVE),
        (True, [], [NEW], CONFIG),
        (True, [NEW], [NEW], None),
        (False, [NEW], [], None),
    ],
    ids=["stopped", "running", "config-only", "live-only", "both", "stopped-there"],
)
def test_attach_plugs_only_what_is_missing(
    active: bool, config: list[NicSpec], live: list[NicSpec], flags: int | None
) -> None:
    dom = FakeDom(active=active, config=config, live=live)
    nic_ops.attach(dom, NEW, vm_id="v")
    assert dom.calls == ([] if flags is None else [("attach", "ua-nic-new", flags)])


@pytest.mark.parametrize(
    "clash",
    [
        NicSpec(nic_id="other", mac=NEW.mac),
        NicSpec(nic_id="other", mac="02:00:00:00:00:78", port=NEW.port),
    ],
    ids=["mac", "port"],
)
def test_attach_refuses_a_nic_whose_mac_or_port_another_nic_has(clash: NicSpec) -> None:
    dom = FakeDom(active=False, config=[clash], live=[])
    with pytest.raises(InvalidState):
        nic_ops.attach(dom, NEW, vm_id="v")
    assert dom.calls == []


def test_unplug_and_config_removal_touch_only_what_is_there() -> None:
    dom = FakeDom(active=True, config=[NEW], live=[NEW])
    assert nic_ops.request_unplug(dom, vm_id="v", nic_id="new")
    nic_ops.remove_config(dom, vm_id="v", nic_id="new")
    assert dom.calls == [("detach", "ua-nic-new", LIVE), ("detach", "ua-nic-new", CONFIG)]
    gone = FakeDom(active=True, config=[], live=[])
    assert not nic_ops.request_unplug(gone, vm_id="v", nic_id="new")
    nic_ops.remove_config(gone, vm_id="v", nic_id="new")
    assert gone.calls == []
    stopped = FakeDom(active=False, config=[NEW], live=[NEW])
    assert not nic_ops.plugged(stopped, vm_id="v", nic_id="new")


def test_nic_facts_of_a_domain_without_nics() -> None:
    assert nic_facts("<domain><devices/></domain>") == ()
