"""The host agent: realizes VMs, disks and host facts on one server."""
