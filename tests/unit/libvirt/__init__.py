"""Unit tests of the libvirt compute driver."""
