"""VM network interfaces (``client.vm_nics``): list, get, hot-plug, change the policy, unplug."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from corral.api.errors import CorralError
from corral.api.nics import AllowedPair, Nic, NicCreate, NicUpdate
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._base import build, parse, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient

NicItems = list[Nic]
"""A VM's NICs (the ``list`` method's name hides the builtin in the class body)."""

NicRef = str | int
"""A NIC of a VM: its id, its MAC or its device number (0: the first)."""

PairLike = AllowedPair | Mapping[str, Any]
"""An allowed address pair: an ``AllowedPair`` or ``{"cidr": "10.0.0.100/32", "mac": ...}``
(no ``mac``: the NIC's own)."""

NicLike = NicCreate | Mapping[str, Any]
"""A NIC to create with a VM: a ``NicCreate`` or a mapping of its fields
(``{"port_group": "web", "security_groups": ["web", "ssh"]}``)."""

_NICS = TypeAdapter(list[Nic])


class AsyncVmNics:
    """``client.vm_nics``: a VM's network interfaces, in device order.

    A NIC is on one port group and gets one address from each of its ``subnets`` (default:
    every subnet of the port group) or the static ``ips`` asked for. Its ``security_groups``
    are evaluated in order (first match wins), then ``ingress_default`` / ``egress_default``
    apply; ``spoof_check`` keeps the guest to its own MAC and addresses (plus
    ``allowed_pairs``). ``vm`` is the VM's id or name, ``nic`` the NIC's id, MAC or device
    number. NICs made with the VM: ``client.vms.create(..., nics=[...])``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, vm: str) -> NicItems:
        """The VM's NICs in device order (``NotFound`` for an unknown VM)."""
        response = await self._client.request("GET", self._path(vm))
        try:
            return _NICS.validate_json(response.content)
        except ValidationError as exc:
            raise CorralError(
                f"the server answered with unexpected NICs: {exc.error_count()} errors"
            ) from exc

    async def get(self, vm: str, nic: NicRef) -> Nic:
        """The VM's NIC with this id, MAC or device number; ``NotFound`` if none."""
        response = await self._client.request("GET", self._item(vm, nic))
        return parse(Nic, response.content)

    async def add(
        self,
        vm: str,
        port_group: str,
        *,
        subnets: Sequence[str] | None = None,
        ips: Sequence[str] = (),
        model: str = "virtio",
        mac: str | None = None,
        security_groups: Sequence[str] = (),
        ingress_default: str = "deny",
        egress_default: str = "allow",
        spoof_check: bool = True,
        allowed_pairs: Sequence[PairLike] = (),
        inbound_kbps: int | None = None,
        outbound_kbps: int | None = None,
    ) -> AsyncOperation:
        """Add a NIC on ``port_group`` (id or name) as the VM's next device (hot-plugged when
        it runs; the VM must be running, stopped or paused on a host).

        ``subnets`` (ids or names): one address from each (None: every subnet of the port
        group; ``[]``: no address); ``ips``: static addresses, each in a subnet of the port
        group. ``model``: virtio, e1000 or rtl8139; ``mac``: a locally administered unicast
        MAC (default: generated). ``security_groups`` (ids or names) in evaluation order.
        ``inbound_kbps`` / ``outbound_kbps``: kbit/s into / from the guest. The addresses are
        allocated at once. Returns the ``vm.nic.add`` operation (``target_id``: the VM's id;
        the new NIC is the VM's last). Raises ``InvalidInput`` for bad values (before any
        request), ``NotFound``, ``InvalidState`` (the VM's state, its NIC count, or a host
        that does not carry the port group: ``context["reason"] ==
        "port_group_unreachable"``) and the IPAM refusals (an address taken, a subnet full)."""
        body = build(
            NicCreate,
            port_group=port_group,
            subnets=None if subnets is None else list(subnets),
            ips=list(ips),
            model=model,
            mac=mac,
            security_groups=list(security_groups),
            ingress_default=ingress_default,
            egress_default=egress_default,
            spoof_check=spoof_check,
            allowed_pairs=list(allowed_pairs),
            inbound_kbps=inbound_kbps,
            outbound_kbps=outbound_kbps,
        )
        return await self._client.operation("POST", self._path(vm), body=body)

    async def update(
        self,
        vm: str,
        nic: NicRef,
        *,
        security_groups: Sequence[str] | None = None,
        ingress_default: str | None = None,
        egress_default: str | None = None,
        spoof_check: bool | None = None,
        allowed_pairs: Sequence[PairLike] | None = None,
    ) -> AsyncOperation:
        """Change the NIC's policy (``None``: unchanged): ``security_groups`` replaces the
        list (``[]``: none), ``allowed_pairs`` likewise. Applied to the hosts concerned at once
        (connections the new policy still allows survive); the returned ``vm.nic.update``
        operation is already finished."""
        body = build(
            NicUpdate,
            security_groups=None if security_groups is None else list(security_groups),
            ingress_default=ingress_default,
            egress_default=egress_default,
            spoof_check=spoof_check,
            allowed_pairs=None if allowed_pairs is None else list(allowed_pairs),
        )
        return await self._client.operation("PATCH", self._item(vm, nic), body=body)

    async def remove(self, vm: str, nic: NicRef, *, timeout: float | None = None) -> AsyncOperation:
        """Unplug the NIC (the guest gets ``timeout`` s to release it; server default 30) and
        return its addresses: the ``vm.nic.remove`` operation. The other NICs keep their
        device numbers."""
        params = None if timeout is None else {"timeout": str(timeout)}
        return await self._client.operation("DELETE", self._item(vm, nic), params=params)

    @staticmethod
    def _path(vm: str) -> str:
        return f"/vms/{quote_ref(vm)}/nics"

    def _item(self, vm: str, nic: NicRef) -> str:
        return f"{self._path(vm)}/{quote_ref(str(nic))}"
