"""LibvirtDriver survives libvirtd dropping its connection (``virt-admin client-disconnect``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.api.agent import VmSpec
from corral.api.vms import PowerState
from tests.integration.libvirt.libvirt_itest import Recorder, qcow2

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.skipif(not shutil.which("virt-admin"), reason="virt-admin missing"),
]
SERVER = "libvirtd"


def our_clients() -> set[str]:
    """Ids of this process's clients of libvirtd."""
    listing = subprocess.run(
        ["virt-admin", "srv-clients-list", SERVER], capture_output=True, text=True, check=True
    ).stdout
    ids = {line.split()[0] for line in listing.splitlines()[2:] if line.strip()}
    ours = set()
    for client in ids:
        info = subprocess.run(
            ["virt-admin", "client-info", SERVER, client], capture_output=True, text=True
        ).stdout
        if f"unix_process_id: {os.getpid()}" in info:
            ours.add(client)
    return ours


def disconnect(client: str) -> None:
    subprocess.run(["virt-admin", "client-disconnect", SERVER, client], check=True)


async def test_reconnects_and_keeps_delivering_events(
    workdir: Path, new_vm_id: Callable[[], str], kvm_probe: tuple[bool, float]
) -> None:
    events = Recorder()
    drv = LibvirtDriver(console_dir=workdir / "console", disk_root=workdir, kvm=kvm_probe[0])
    before = await asyncio.to_thread(our_clients)
    await drv.open(events)
    try:
        (client,) = await asyncio.to_thread(our_clients) - before
        await asyncio.to_thread(disconnect, client)

        vm = new_vm_id()
        spec = VmSpec(vm_id=vm, name=vm, cpus=1, memory_mb=64, disk_gb=1, vnc_password="pw")
        await drv.define(spec, str(qcow2(workdir / "disk.qcow2")))
        assert client not in await asyncio.to_thread(our_clients)
        await drv.start(vm)
        assert (await events.wait_for(vm, PowerState.running)).vm_id == vm
        await drv.stop(vm, force=True, timeout=0)
    finally:
        await drv.close()
