"""Hosts converge to the network state the server computes for them (``netplan.controller``).

- **Push**: ``push_host`` computes a host's state (claiming its host-local numbers and DHCP
  server addresses, committed) and sends it as a ``network.apply`` task (task id
  ``net:<host>:<nonce>``); it returns the digest the agent holds afterwards. Workflows call it
  where they need the host ready (a VM's ports before it is defined) and its undo.
- **Fan-out**: ``hosts_changed`` pushes to hosts in the background, at most one push per host
  in flight and one more queued behind it (``PoolSyncState``, keyed by host): a security-group
  rule change reaches every host concerned at once, without waiting for a heartbeat.
- **Convergence**: every heartbeat carries the digest the agent holds
  (``Heartbeat.network_digest``); when it differs from the last digest pushed (cached per
  host; unknown after a server restart: computed once in the background) the host gets its
  state again. A host that rejoins, or whose agent lost its state, converges within a
  heartbeat or two.

Generations grow with the clock (``time.time_ns``): an agent ignores a state older than the one
it holds, so two pushes that cross cannot leave it with the older one.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import select

from corral.api.agent import NetworkApply, network_digest
from corral.api.errors import AgentError, CorralError
from corral.server.db.tables import HostRow, NicRow, NicSecurityGroupRow, VmRow
from corral.server.netplan.controller import host_state, hosts_of_groups, hosts_of_port_groups
from corral.server.services.context import Services
from corral.server.services.nics import forget_nics
from corral.server.services.pool_sync import agent_endpoint

log = logging.getLogger(__name__)


EMPTY = network_digest(NetworkApply(generation=0))
"""The digest of a host without NICs (an agent that holds nothing says ``""``: the same)."""


def _generation() -> int:
    return time.time_ns()


async def compute(svc: Services, host_id: str) -> NetworkApply:
    """The host's state now (its numbers and DHCP addresses claimed and committed)."""
    async with svc.sessionmaker() as s:
        state = await host_state(s, host_id, _generation())
        await s.commit()
    return state


async def push_host(svc: Services, host_id: str) -> str:
    """Compute the host's state and have its agent apply it; the digest it holds afterwards.
    ``AgentError`` (or the agent's own error, e.g. ``NetworkError``) on failure; a host that
    does not exist any more: ``""``."""
    state = svc.agents.net_sync
    async with state.lock(host_id):
        async with svc.sessionmaker() as s:
            host = await s.get(HostRow, host_id)
            if host is None:
                return ""
            wanted = await host_state(s, host_id, _generation())
            await s.commit()
        digest = network_digest(wanted)
        ep = await agent_endpoint(svc, host)
        task_id = f"net:{host_id}:{secrets.token_hex(8)}"
        result = await svc.agents.run(ep, task_id, wanted)
        held = result.get("digest")
        if held != digest:
            raise AgentError(
                f"host {host_id} holds another network state after applying it",
                host_id=host_id,
            )
        state.remember(host_id, digest, state.version)
        return digest


async def _push_quietly(svc: Services, host_id: str) -> bool:
    try:
        await push_host(svc, host_id)
        return True
    except CorralError as exc:
        level = logging.INFO if exc.expected else logging.WARNING
        log.log(level, "host %s: network push failed: %s", host_id, exc)
        return False


def hosts_changed(svc: Services, host_ids: Iterable[str]) -> None:
    """After a committed change: push to each host in the background (see the module
    docstring). Never raises."""
    state = svc.agents.net_sync
    for host_id in sorted(set(host_ids)):
        state.start(host_id, lambda h=host_id: _push_quietly(svc, h), force=True)  # type: ignore[misc]


async def settle(svc: Services, host_ids: Iterable[str]) -> None:
    """Until no background push of these hosts runs (tests, benchmarks)."""
    for host_id in set(host_ids):
        await svc.agents.net_sync.settle(host_id)


def check_heartbeat(svc: Services, host: HostRow, reported: str | None) -> None:
    """For every heartbeat: when the agent's network digest (None: it does not say) differs
    from the last one pushed, or none is cached, check and push in the background (at most
    one per host; failures back off). No I/O here."""
    if reported is None:
        return
    state = svc.agents.net_sync
    if state.expected(host.id) == reported or state.in_flight(host.id):
        return
    host_id = host.id

    async def check() -> bool:
        wanted = network_digest(await compute(svc, host_id))
        if wanted == reported or (reported == "" and wanted == EMPTY):
            state.remember(host_id, wanted, state.version)
            return True
        return await _push_quietly(svc, host_id)

    state.start(host_id, check)


async def neighbours(svc: Services, vm_id: str, host_id: str | None) -> set[str]:
    """The hosts (other than ``host_id``) whose state depends on VM ``vm_id``'s NICs: hosts
    with NICs on the same port groups (VXLAN tunnels to its host) or whose flows name its
    security groups (their members' addresses)."""
    async with svc.sessionmaker() as s:
        nics = list(
            await s.execute(select(NicRow.id, NicRow.port_group_id).where(NicRow.vm_id == vm_id))
        )
        if not nics:
            return set()
        groups = set(
            await s.scalars(
                select(NicSecurityGroupRow.group_id).where(
                    NicSecurityGroupRow.nic_id.in_([n for n, _ in nics])
                )
            )
        )
        hosts = await hosts_of_port_groups(s, {pg for _, pg in nics})
        hosts |= await hosts_of_groups(s, groups)
    hosts.discard(host_id or "")
    return hosts


async def connect(svc: Services, vm_id: str, host_id: str) -> None:
    """After VM ``vm_id``'s NICs were recorded: its host gets its new state now (their
    segments, DHCP entries and flows: what the VM's ports plug into), the hosts that depend on
    them (VXLAN peers, security-group members) in the background."""
    await push_host(svc, host_id)
    hosts_changed(svc, await neighbours(svc, vm_id, host_id))


async def disconnect(
    svc: Services, vm_id: str, host_id: str, nic_ids: Sequence[str] | None = None
) -> None:
    """Forget VM ``vm_id``'s NICs ``nic_ids`` (None: all; their addresses go back) and take
    them off its host now, off the hosts that depended on them in the background."""
    others = await neighbours(svc, vm_id, host_id)
    async with svc.sessionmaker.begin() as s:
        await forget_nics(s, vm_id, nic_ids)
    await push_host(svc, host_id)
    hosts_changed(svc, others)


def groups_changed(svc: Services, group_ids: Iterable[str]) -> None:
    """After a committed change of security groups (rules, intra-group flag): push to every
    host whose flows depend on them, in the background."""
    ids = sorted(set(group_ids))

    async def run() -> None:
        async with svc.sessionmaker() as s:
            hosts = await hosts_of_groups(s, ids)
        hosts_changed(svc, hosts)

    svc.agents.net_sync.spawn(run(), name=f"net-groups-{ids[0] if ids else ''}")


def port_groups_changed(svc: Services, port_group_ids: Iterable[str]) -> None:
    """After a committed change of port groups or their subnets (DHCP options): push to every
    host with NICs on them, in the background."""
    ids = sorted(set(port_group_ids))

    async def run() -> None:
        async with svc.sessionmaker() as s:
            hosts = await hosts_of_port_groups(s, ids)
        hosts_changed(svc, hosts)

    svc.agents.net_sync.spawn(run(), name=f"net-port-groups-{ids[0] if ids else ''}")


def tunnel_moved(svc: Services, host_id: str) -> None:
    """A host's tunnel endpoint changed (or appeared): the hosts sharing VXLAN port groups
    with it get new tunnels, in the background."""

    async def run() -> None:
        async with svc.sessionmaker() as s:
            pgs = set(
                await s.scalars(
                    select(NicRow.port_group_id)
                    .join(VmRow, VmRow.id == NicRow.vm_id)
                    .where(VmRow.host_id == host_id)
                )
            )
            hosts = await hosts_of_port_groups(s, pgs)
        hosts_changed(svc, hosts | {host_id})

    svc.agents.net_sync.spawn(run(), name=f"net-tunnel-{host_id}")
