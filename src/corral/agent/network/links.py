"""A host's kernel network interfaces, through ``ip`` (iproute2): addresses and link state.

Only what the agent's network code needs: read an interface's addresses, add one if missing,
bring an interface up. ``netns`` runs every command in that network namespace (``ip -n``):
``None`` (the agent on a real host) is the current one; tests run "hosts" in namespaces.
Failures raise ``NetworkError`` with the command and its stderr.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any

from corral.agent.storage.tools import run_tool
from corral.api.errors import CorralError, NetworkError

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Links:
    """Interfaces of one network namespace (``None``: the agent's own)."""

    netns: str | None = None

    async def _ip(self, *args: str) -> str:
        ns = ("-n", self.netns) if self.netns else ()
        argv = ("ip", *ns, *args)
        try:
            result = await run_tool(argv, timeout=TIMEOUT_S, env=dict(os.environ))
        except CorralError as exc:
            raise NetworkError(f"ip failed: {exc.message}", **exc.context) from exc
        return result.stdout

    async def _json(self, *args: str) -> list[dict[str, Any]]:
        out = await self._ip("-j", *args)
        try:
            data = json.loads(out or "[]")
        except ValueError as exc:
            raise NetworkError("cannot parse ip's output", output=out[:2000]) from exc
        return data if isinstance(data, list) else []

    async def addresses(self, dev: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses on ``dev`` with their prefixes (``NetworkError`` if it does not
        exist)."""
        found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        for link in await self._json("addr", "show", "dev", dev):
            for a in link.get("addr_info", []):
                found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
        return found

    async def ensure_address(
        self, dev: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    ) -> bool:
        """``address`` (with its prefix) is on ``dev``; True if it was added now. Other
        addresses of ``dev`` are left alone."""
        if address in await self.addresses(dev):
            return False
        await self._ip("addr", "add", str(address), "dev", dev)
        return True

    async def ensure_up(self, dev: str) -> bool:
        """``dev`` is administratively up; True if it was brought up now."""
        links = await self._json("link", "show", "dev", dev)
        if links and "UP" in links[0].get("flags", []):
            return False
        await self._ip("link", "set", "dev", dev, "up")
        return True
