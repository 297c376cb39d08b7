"""Storage on the host: the local directory pool for VM disks."""
