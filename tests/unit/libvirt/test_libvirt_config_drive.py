"""The config drive's ISO file through ``LibvirtDriver`` on libvirt's in-process
``test:///default`` hypervisor: made at define, kept when unchanged, replaced when changed, left
alone by a failed define, removed by a define without it and by undefine; and start-up
reconciliation neither reports it as drift nor loses it."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver, ensure_event_loop
from corral.agent.compute.libvirt.xml.parse import CONFIG_DRIVE_ALIAS
from corral.agent.configdrive import drive_digest, iso_digest
from corral.agent.reconcile import REDEFINED, reconcile
from corral.agent.specs import SpecStore, StoredSpec
from corral.api.agent import ConfigDrive, VmEvent, VmSpec
from corral.api.errors import DriverError
from corral.api.vms import PowerState

URI = "test:///default"
DRIVE = ConfigDrive(meta_data="instance-id: i-1\n", network_config="version: 2\n")


@pytest.fixture
def raw_conn() -> Iterator[Any]:
    ensure_event_loop()
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture
def spec() -> VmSpec:
    vm_id = f"unit-{uuid.uuid4().hex[:8]}"
    return VmSpec(
        vm_id=vm_id,
        name="unit",
        cpus=1,
        memory_mb=64,
        disk_gb=1,
        vnc_password="pw",
        config_drive=DRIVE,
    )


@pytest.fixture
async def driver(tmp_path: Path, spec: VmSpec) -> AsyncIterator[LibvirtDriver]:
    events: list[VmEvent] = []
    drv = LibvirtDriver(uri=URI, console_dir=tmp_path / "console", disk_root=tmp_path, kvm=False)
    await drv.open(events.append)
    yield drv
    await drv.undefine(spec.vm_id)
    await drv.close()


def drive_source(conn: Any, vm_id: str) -> str | None:
    """The config drive's file in the persistent definition; None without one."""
    dom = conn.lookupByName(f"corral-{vm_id}")
    for disk in ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).iterfind(
        "devices/disk"
    ):
        alias = disk.find("alias")
        if alias is not None and alias.get("name") == CONFIG_DRIVE_ALIAS:
            source = disk.find("source")
            return source.get("file") if source is not None else ""
    return None


class FailingDefine:
    """A connection whose ``defineXMLFlags`` fails (everything else passes through)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def defineXMLFlags(self, xml: str, flags: int) -> Any:
        raise libvirt.libvirtError("refused by the test")


async def test_define_makes_keeps_replaces_and_removes_the_iso(
    driver: LibvirtDriver, spec: VmSpec, raw_conn: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    vm = spec.vm_id
    iso = tmp_path / "configdrive" / f"{vm}.iso"
    await driver.define(spec, "/d/x.qcow2")
    assert drive_source(raw_conn, vm) == str(iso)
    assert iso_digest(iso) == drive_digest(DRIVE)
    assert oct(iso.parent.stat().st_mode & 0o777) == "0o711"
    assert (await driver.describe(vm))["config_drive"] is True
    inode = iso.stat().st_ino

    await driver.define(spec, "/d/x.qcow2")  # unchanged: the file is left alone
    assert iso.stat().st_ino == inode

    changed = spec.model_copy(
        update={"config_drive": DRIVE.model_copy(update={"user_data": "#cloud-config\n"})}
    )
    real = driver._conn.get()
    monkeypatch.setattr(driver._conn, "get", lambda: FailingDefine(real))
    with pytest.raises(DriverError):
        await driver.define(changed, "/d/x.qcow2")
    monkeypatch.undo()
    assert iso.stat().st_ino == inode and iso_digest(iso) == drive_digest(DRIVE)
    assert sorted(p.name for p in iso.parent.iterdir()) == [iso.name]  # no staged file left

    await driver.define(changed, "/d/x.qcow2")
    assert iso_digest(iso) == drive_digest(changed.config_drive)  # type: ignore[arg-type]

    await driver.define(spec.model_copy(update={"config_drive": None}), "/d/x.qcow2")
    assert drive_source(raw_conn, vm) is None and not iso.exists()
    assert (await driver.describe(vm))["config_drive"] is False

    await driver.define(spec, "/d/x.qcow2")
    assert iso.exists()
    await driver.undefine(vm)
    assert not iso.exists()
    assert await driver.power_state(vm) == PowerState.absent


async def test_reconcile_sees_no_drift_and_rebuilds_a_lost_definition(
    driver: LibvirtDriver, spec: VmSpec, raw_conn: Any, tmp_path: Path
) -> None:
    vm = spec.vm_id
    iso = tmp_path / "configdrive" / f"{vm}.iso"
    specs = SpecStore(tmp_path / "vms")
    specs.open()
    await driver.define(spec, "/d/x.qcow2")
    specs.put(StoredSpec(spec=spec, disk_path="/d/x.qcow2"))
    assert await reconcile(compute=driver, specs=specs) == {}

    # The definition and the ISO are lost: both come back from the stored spec.
    await driver.undefine(vm)
    assert not iso.exists()
    assert await reconcile(compute=driver, specs=specs) == {vm: [REDEFINED]}
    assert drive_source(raw_conn, vm) == str(iso) and iso_digest(iso) == drive_digest(DRIVE)
    assert await reconcile(compute=driver, specs=specs) == {}

    # Redefined without it: no drift either.
    without = spec.model_copy(update={"config_drive": None})
    await driver.define(without, "/d/x.qcow2")
    specs.put(StoredSpec(spec=without, disk_path="/d/x.qcow2"))
    assert await reconcile(compute=driver, specs=specs) == {}
    assert not iso.exists()
