"""Integration tests of the libvirt compute driver against a real libvirtd."""
