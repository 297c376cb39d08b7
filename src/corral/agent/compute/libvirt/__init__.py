"""The libvirt compute driver: Corral VMs as libvirt/QEMU domains (KVM or TCG)."""

from corral.agent.compute.libvirt.driver import LibvirtDriver
from corral.agent.compute.libvirt.eventloop import ensure_event_loop
from corral.agent.compute.libvirt.probe import probe_boot, probe_kvm

__all__ = ["LibvirtDriver", "ensure_event_loop", "probe_boot", "probe_kvm"]
