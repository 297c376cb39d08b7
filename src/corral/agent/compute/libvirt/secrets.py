"""libvirt secrets holding the credentials of network pools (cephx keys, CHAP passwords)."""

from __future__ import annotations

import base64
import binascii
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.xml.compose import secret_usage
from corral.agent.compute.libvirt.xml.util import render, sub
from corral.agent.storage.backend import DiskAuth
from corral.api.errors import InvalidInput

_UUID_NAMESPACE = uuid.UUID("0c5b9e0e-49a4-4c61-9d3e-636f7272616c")


def secret_xml(auth: DiskAuth) -> str:
    """A persistent, private secret (its value cannot be read back through libvirt) with usage
    ``corral-pool-<pool_id>`` and a UUID derived from it, so defining it again updates it."""
    usage_name = secret_usage(auth.pool_id)
    secret = ET.Element("secret", ephemeral="no", private="yes")
    sub(secret, "uuid", str(uuid.uuid5(_UUID_NAMESPACE, f"{auth.type}:{usage_name}")))
    sub(secret, "description", f"Corral storage pool {auth.pool_id}")
    usage = sub(secret, "usage", type=auth.type)
    sub(usage, "name" if auth.type == "ceph" else "target", usage_name)
    return render(secret)


def secret_value(auth: DiskAuth) -> bytes:
    """The bytes libvirt keeps: the decoded cephx key (libvirt hands QEMU its base64), or the
    CHAP password as is. ``InvalidInput`` (without the key) for a cephx key that is not base64."""
    if auth.type == "iscsi":
        return auth.secret.encode()
    try:
        return base64.b64decode(auth.secret, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the pool's cephx key is not base64", pool_id=auth.pool_id) from None


def ensure_secret(conn: Any, auth: DiskAuth) -> None:
    """Define (or update) the pool's secret and set its value; idempotent, safe to repeat on
    every attach (a rotated key replaces the old one). Blocking."""
    value = secret_value(auth)
    with libvirt_errors(pool_id=auth.pool_id):
        secret = conn.secretDefineXML(secret_xml(auth), 0)
        secret.setValue(value, 0)
