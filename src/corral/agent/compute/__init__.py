"""Compute drivers: libvirt (real QEMU/KVM) and simulator."""
