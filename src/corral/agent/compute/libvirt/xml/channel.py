"""``<channel>``: the virtio-serial port of the QEMU guest agent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub

GUEST_AGENT_PORT = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class GuestAgentChannel:
    """A unix-socket channel named ``org.qemu.guest_agent.0``; libvirt chooses the socket path
    (under its own state directory, writable by QEMU) and connects its agent client to it."""

    def element(self) -> ET.Element:
        channel = ET.Element("channel", type="unix")
        sub(channel, "target", type="virtio", name=GUEST_AGENT_PORT)
        return channel
