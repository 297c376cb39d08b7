"""Open vSwitch on a host, through its command-line tools (``ovs-vsctl``, ``ovs-ofctl``).

The agent owns one integration bridge (``br-int`` by default) in the userspace datapath
(``datapath_type=netdev``: no kernel module needed) with ``fail-mode=secure``: without flows
nothing passes, so a host whose agent has not applied its state yet leaks nothing. Everything
here is idempotent: ``ensure_bridge`` and ``ensure_port`` converge to the wanted settings,
``replace_flows`` makes the bridge's flow table exactly the given one in one OpenFlow bundle
(``ovs-ofctl --bundle replace-flows``: an atomic switch, only differences are sent), so applying
the same computed state twice changes nothing and a restarted ``ovs-vswitchd`` (which loses its
flows) is repaired by applying it again.

``env`` selects the OVS instance (``OVS_RUNDIR`` …): the system's by default, a private one in
tests. Failures raise ``NetworkError`` with the command and its stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.agent.storage.tools import run_tool
from corral.api.errors import CorralError, NetworkError

TIMEOUT_S = 30.0


@dataclass
class Ovs:
    """One host's Open vSwitch. ``db``: the ovsdb socket (``unix:…``), None: the default."""

    db: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    async def _run(self, *argv: str, stdin: bytes | None = None) -> str:
        env = {**os.environ, **self.env}
        try:
            result = await run_tool(argv, stdin=stdin, timeout=TIMEOUT_S, env=env)
        except CorralError as exc:
            raise NetworkError(f"{argv[0]} failed: {exc.message}", **exc.context) from exc
        return result.stdout

    async def vsctl(self, *args: str) -> str:
        db = (f"--db={self.db}",) if self.db else ()
        return await self._run("ovs-vsctl", *db, f"--timeout={int(TIMEOUT_S)}", *args)

    async def ofctl(self, *args: str, stdin: bytes | None = None) -> str:
        return await self._run("ovs-ofctl", "-O", "OpenFlow15", *args, stdin=stdin)

    async def ensure_bridge(self, bridge: str) -> None:
        """The bridge exists in the userspace datapath with ``fail-mode=secure``."""
        await self.vsctl(
            "--may-exist", "add-br", bridge,
            "--", "set", "bridge", bridge, "datapath_type=netdev", "fail-mode=secure",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
        )  # fmt: skip

    async def ensure_port(
        self,
        bridge: str,
        port: str,
        *,
        ofport: int | None = None,
        tag: int | None = None,
        type: str | None = None,
        options: Mapping[str, str] | None = None,
        external_ids: Mapping[str, str] | None = None,
    ) -> None:
        """The port is on ``bridge`` with these settings (``tag``: access VLAN; ``type``:
        e.g. ``vxlan`` with ``options`` ``remote_ip``/``key``; ``ofport``: the OpenFlow port
        number asked for)."""
        cmd = ["--may-exist", "add-port", bridge, port]
        port_set = [f"tag={tag}"] if tag is not None else []
        if port_set:
            cmd += ["--", "set", "port", port, *port_set]
        elif tag is None:
            cmd += ["--", "clear", "port", port, "tag"]
        iface = []
        if type is not None:
            iface.append(f"type={type}")
        if ofport is not None:
            iface.append(f"ofport_request={ofport}")
        iface += [f"options:{k}={v}" for k, v in sorted((options or {}).items())]
        iface += [f"external_ids:{k}={v}" for k, v in sorted((external_ids or {}).items())]
        if iface:
            cmd += ["--", "set", "interface", port, *iface]
        await self.vsctl(*cmd)

    async def delete_port(self, bridge: str, port: str) -> None:
        """The port is gone from the bridge (absent: success)."""
        await self.vsctl("--if-exists", "del-port", bridge, port)

    async def remove_port(self, port: str) -> None:
        """The port is gone from whichever bridge holds it (absent: success)."""
        await self.vsctl("--if-exists", "del-port", port)

    async def find_ports(self, **external_ids: str) -> list[str]:
        """The names of the interfaces (on any bridge) whose ``external_ids`` hold all these
        keys with these values, sorted. Python names map to keys with ``_`` as ``-``
        (``corral_dhcp="x"`` matches ``external_ids:corral-dhcp=x``)."""
        if not external_ids:
            raise ValueError("find_ports needs at least one external id")
        conds = [f"external_ids:{k.replace('_', '-')}={v}" for k, v in sorted(external_ids.items())]
        out = await self.vsctl("--bare", "--columns=name", "find", "interface", *conds)
        return sorted(p for p in out.split() if p)

    async def ports(self, bridge: str) -> list[str]:
        out = await self.vsctl("list-ports", bridge)
        return [p for p in out.split() if p]

    async def ofport(self, port: str) -> int:
        """The OpenFlow port number of ``port`` (``NetworkError`` if it has none yet)."""
        out = (await self.vsctl("get", "interface", port, "ofport")).strip()
        if not out.lstrip("-").isdigit() or int(out) <= 0:
            raise NetworkError(f"port {port} has no OpenFlow number", port=port, ofport=out)
        return int(out)

    async def replace_flows(self, bridge: str, flows: Sequence[str]) -> None:
        """Make the bridge's flows exactly ``flows`` in one atomic bundle."""
        fd, path = tempfile.mkstemp(prefix="corral-flows-", suffix=".txt")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(flows) + "\n")
            await self.ofctl("--bundle", "replace-flows", bridge, path)
        finally:
            await asyncio.to_thread(_unlink, path)

    async def meters(self, bridge: str) -> dict[int, tuple[int, int]]:
        """The bridge's meters: id -> (rate in kbit/s, burst in kbit) of their drop band."""
        out = await self.ofctl("dump-meters", bridge)
        found: dict[int, tuple[int, int]] = {}
        for m in _METER.finditer(out):
            found[int(m.group(1))] = (int(m.group(2)), int(m.group(3) or 0))
        return found

    async def set_meter(
        self, bridge: str, meter_id: int, kbps: int, burst_kbits: int, *, exists: bool
    ) -> None:
        """Add (or, ``exists``, modify) a drop meter of ``kbps`` with a ``burst_kbits`` burst."""
        spec = f"meter={meter_id},kbps,burst,band=type=drop,rate={kbps},burst_size={burst_kbits}"
        await self.ofctl("mod-meter" if exists else "add-meter", bridge, spec)

    async def delete_meter(self, bridge: str, meter_id: int) -> None:
        await self.ofctl("del-meters", bridge, f"meter={meter_id}")

    async def dump_flows(self, bridge: str) -> list[str]:
        out = await self.ofctl("--no-stats", "dump-flows", bridge)
        return [line.strip() for line in out.splitlines() if "actions=" in line]

    async def appctl(self, *args: str) -> str:
        """``ovs-appctl`` to this instance's ``ovs-vswitchd`` (found through ``OVS_RUNDIR``)."""
        return await self._run("ovs-appctl", "-t", "ovs-vswitchd", *args)

    async def ensure_standalone_bridge(self, bridge: str) -> None:
        """The bridge exists in the userspace datapath as a plain learning switch
        (``fail-mode=standalone``: the default ``NORMAL`` flow; nobody owns its flows)."""
        await self.vsctl(
            "--may-exist", "add-br", bridge,
            "--", "set", "bridge", bridge, "datapath_type=netdev", "fail-mode=standalone",
        )  # fmt: skip

    async def list_rows(self, table: str, columns: Sequence[str]) -> list[dict[str, Any]]:
        """Every row of an OVSDB ``table`` (``Bridge``, ``Port``, ``Interface`` …) with these
        ``columns``, decoded: a UUID as its string, a set as a list (an empty optional
        column: ``[]``; a one-element set may come as the bare value), a map as a dict."""
        out = await self.vsctl(
            "--format=json", "--data=json", f"--columns={','.join(columns)}", "list", table
        )
        try:
            doc = json.loads(out)
            headings: list[str] = doc["headings"]
            return [
                {h: _ovsdb_value(v) for h, v in zip(headings, row, strict=True)}
                for row in doc["data"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"cannot read the {table} table", output=out[:2000]) from exc


_METER = re.compile(r"meter=(\d+)\b[^\n]*\n?\s*type=drop rate=(\d+)(?: burst_size=(\d+))?")


def _ovsdb_value(value: Any) -> Any:
    """An OVSDB JSON value (``["uuid", u]``, ``["set", [...]]``, ``["map", [[k, v]...]]`` or an
    atom) as plain Python."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind in ("uuid", "named-uuid"):
            return body
        if kind == "set":
            return [_ovsdb_value(v) for v in body]
        if kind == "map":
            return {_ovsdb_value(k): _ovsdb_value(v) for k, v in body}
    return value


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
