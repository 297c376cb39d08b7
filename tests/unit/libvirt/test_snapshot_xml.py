"""The ``<domainsnapshot>`` of a data volume's live external snapshot."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from corral.agent.compute.libvirt.disks import SNAPSHOT_FLAGS, snapshot_xml


def test_only_the_volumes_disk_is_snapshotted_into_the_given_file() -> None:
    root = ET.fromstring(snapshot_xml(["vda", "vdb", "vdc", "hda"], "vdc", "/p/volumes/v1"))
    assert root.tag == "domainsnapshot"
    disks = {d.get("name", ""): d for d in root.iterfind("disks/disk")}
    assert sorted(disks) == ["hda", "vda", "vdb", "vdc"]
    assert {n: d.get("snapshot") for n, d in disks.items()} == {
        "vda": "no",
        "vdb": "no",
        "hda": "no",
        "vdc": "external",
    }
    target = disks["vdc"]
    assert target.get("type") == "file"
    assert target.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert target.find("source").get("file") == "/p/volumes/v1"  # type: ignore[union-attr]


def test_flags_reuse_the_overlay_and_keep_no_metadata() -> None:
    for flag in (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY,
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA,
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT,
    ):
        assert SNAPSHOT_FLAGS & flag
    assert not SNAPSHOT_FLAGS & libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
