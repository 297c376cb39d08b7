"""``<metadata>``: marks a domain as Corral's and records the VM id and name."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub

NAMESPACE = "https://corral.dev/xmlns/vm/1.0"
"""XML namespace of Corral's metadata element; libvirt keys custom metadata by it."""
PREFIX = "corral"

ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True)
class VmMetadata:
    """``<metadata><corral:vm id=… name=…/></metadata>``."""

    vm_id: str
    name: str

    def element(self) -> ET.Element:
        metadata = ET.Element("metadata")
        sub(metadata, f"{{{NAMESPACE}}}vm", id=self.vm_id, name=self.name)
        return metadata

    @staticmethod
    def find(domain: ET.Element) -> VmMetadata | None:
        """Read Corral's metadata from a parsed ``<domain>``; None if the domain is not Corral's."""
        vm = domain.find(f"metadata/{{{NAMESPACE}}}vm")
        if vm is None or not vm.get("id"):
            return None
        return VmMetadata(vm_id=vm.get("id", ""), name=vm.get("name", ""))
