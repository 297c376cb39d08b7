"""``<features>``: ACPI/APIC (needed for graceful shutdown) and the TCG translation cache size."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub

TCG_TB_CACHE_MIB = 32
"""TCG translation block cache; QEMU's default (1 GiB) would cost each TCG guest ~1.1 GB of RAM."""


@dataclass(frozen=True)
class Features:
    """``tcg_tb_cache_mib`` must be set for ``<domain type='qemu'>`` and None for KVM."""

    acpi: bool = True
    apic: bool = True
    tcg_tb_cache_mib: int | None = None

    def element(self) -> ET.Element:
        features = ET.Element("features")
        if self.acpi:
            sub(features, "acpi")
        if self.apic:
            sub(features, "apic")
        if self.tcg_tb_cache_mib is not None:
            tcg = sub(features, "tcg")
            sub(tcg, "tb-cache", str(self.tcg_tb_cache_mib), unit="MiB")
        return features
