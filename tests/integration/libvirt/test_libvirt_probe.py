"""The KVM probe and host facts on this machine's libvirtd."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from corral.agent.compute.libvirt import LibvirtDriver, probe_boot
from corral.agent.compute.libvirt.xml.domain import DomainType

pytestmark = pytest.mark.libvirt

PROBE_BUDGET = 6.0
"""Seconds probe_kvm may take: its 2 s boot timeout plus creating and destroying the domain."""


def test_probe_kvm_answers_within_its_budget(kvm_probe: tuple[bool, float]) -> None:
    usable, seconds = kvm_probe
    assert isinstance(usable, bool)
    assert seconds < PROBE_BUDGET


def test_a_guest_of_the_chosen_type_really_boots(
    kvm_probe: tuple[bool, float], system_conn: Any
) -> None:
    domain_type: DomainType = "kvm" if kvm_probe[0] else "qemu"
    started = time.monotonic()
    assert probe_boot(system_conn, domain_type=domain_type, timeout=20)
    assert time.monotonic() - started < 25
    assert not [d for d in system_conn.listAllDomains() if d.name().startswith("corral.probe-")]


async def test_facts(driver: LibvirtDriver, kvm_probe: tuple[bool, float]) -> None:
    facts = await driver.facts()
    assert facts.driver == "libvirt" and facts.kvm_usable is kvm_probe[0]
    assert facts.hypervisor == ("kvm" if kvm_probe[0] else "qemu")
    assert facts.arch == "x86_64" and facts.cpu_model
    assert facts.cpu_threads >= facts.cpu_cores >= facts.cpu_sockets >= 1
    assert facts.memory_mb > 0 and 0 < facts.disk_gb_free <= facts.disk_gb_total
    assert re.fullmatch(r"\d+\.\d+\.\d+", facts.libvirt_version or "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", facts.qemu_version or "")


async def test_probe_runs_once_and_is_cached(driver: LibvirtDriver) -> None:
    fresh = LibvirtDriver(
        console_dir=driver.console_dir, disk_root=driver.disk_root, probe_timeout=0.5
    )
    try:
        started = time.monotonic()
        first = await fresh.kvm_usable()
        probing = time.monotonic() - started
        started = time.monotonic()
        assert await fresh.kvm_usable() is first
        assert time.monotonic() - started < probing / 10
    finally:
        await fresh.close()
