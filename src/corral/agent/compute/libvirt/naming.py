"""How Corral's VMs are named in libvirt: ``corral-<vm_id>`` with a UUID derived from the id."""

from __future__ import annotations

import uuid

from corral.api.errors import InvalidInput

DOMAIN_PREFIX = "corral-"
_UUID_NAMESPACE = uuid.UUID("5b0f1f4e-4a0c-4d8e-9a43-6c6f7272616c")


def domain_name(vm_id: str) -> str:
    """The libvirt domain name of VM ``vm_id``. ``InvalidInput`` for ids libvirt cannot carry."""
    if not vm_id or "/" in vm_id or any(c.isspace() or not c.isprintable() for c in vm_id):
        raise InvalidInput("vm id is not usable as a libvirt domain name", vm_id=vm_id)
    return DOMAIN_PREFIX + vm_id


def vm_id_of(name: str) -> str | None:
    """The VM id inside a domain name, or None if the name is not Corral's."""
    if name.startswith(DOMAIN_PREFIX) and len(name) > len(DOMAIN_PREFIX):
        return name[len(DOMAIN_PREFIX) :]
    return None


def domain_uuid(vm_id: str) -> str:
    """A stable UUID for the VM's domain, so redefining it never clashes with the old one."""
    return str(uuid.uuid5(_UUID_NAMESPACE, vm_id))
