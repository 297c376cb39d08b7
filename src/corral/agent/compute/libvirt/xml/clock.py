"""``<clock>``: the guest's RTC."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Clock:
    """RTC in UTC (``localtime`` for Windows guests), with the usual KVM timer choices."""

    offset: str = "utc"

    def element(self) -> ET.Element:
        clock = ET.Element("clock", offset=self.offset)
        sub(clock, "timer", name="rtc", tickpolicy="catchup")
        sub(clock, "timer", name="pit", tickpolicy="delay")
        sub(clock, "timer", name="hpet", present="no")
        return clock
