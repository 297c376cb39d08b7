"""The recycle bin (``client.recycle_bin``) and the deletion policies
(``client.deletion_policies``): deleted VMs, volumes and images kept until restored or expunged."""

# Generated from corral/sdk/_async/recycle.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from corral.api.errors import CorralError, InvalidInput

# the model is aliased: the class of ``client.deletion_policies`` has its name in the sync client
from corral.api.recycle import DeletionPolicies as DeletionPoliciesModel
from corral.api.recycle import KindPolicy, RecycleItem, RecycleKind, RecycleRestore
from corral.sdk._base import build, quote_ref
from corral.sdk._sync.operation import Operation

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

_ITEMS = TypeAdapter(list[RecycleItem])

Policy = KindPolicy | Mapping[str, Any]
"""One kind's policy: a ``KindPolicy`` or a mapping of its fields
(``{"policy": "delayed", "retention_hours": 72}``; fields not given take their defaults)."""


class RecycleBin:
    """``client.recycle_bin``: VMs, volumes and images deleted under the ``delayed`` or ``never``
    policy. In the bin a resource is hidden from its lists and lookups and its name is free
    again, but it keeps what it holds (disks, host claim, pool space, quota; a VM is stopped)
    until it is restored or expunged. Entries are referred to by their own id
    (``RecycleItem.id``), not the resource's."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, kind: RecycleKind | None = None) -> list[RecycleItem]:
        """The entries the caller sees (only ``kind``: ``"vm"``, ``"volume"`` or ``"image"``),
        newest first. ``expunge_at`` None: kept until expunged by hand."""
        params = {"kind": kind} if kind is not None else None
        response = self._client.request("GET", "/recycle-bin", params=params)
        try:
            return _ITEMS.validate_json(response.content)
        except ValidationError as exc:
            raise CorralError(
                f"the server answered with an unexpected recycle bin: {exc.error_count()} errors"
            ) from exc

    def restore(self, entry_id: str, name: str | None = None) -> Operation:
        """Put the resource back under its old name, or ``name``: ``NameTaken`` if that name is
        taken now. A VM comes back stopped, a volume available, an image ready. The finished
        ``<kind>.restore`` operation; its ``target_id`` is the resource's id."""
        body = build(RecycleRestore, name=name)
        return self._client.operation(
            "POST", f"/recycle-bin/{quote_ref(entry_id)}/restore", body=body
        )

    def expunge(self, entry_id: str) -> Operation:
        """Delete the resource for good, giving back what it holds: the ``<kind>.delete``
        operation (wait on it: a VM's or a created volume's takes a while). ``InvalidState``
        while the kind's policy is ``never``."""
        return self._client.operation("POST", f"/recycle-bin/{quote_ref(entry_id)}/expunge")


class DeletionPolicies:
    """``client.deletion_policies``: what a delete of a VM, a volume or an image does.
    ``immediate``: deleted at once; ``delayed``: to the recycle bin, expunged after
    ``retention_hours``; ``never``: to the bin, never expunged while the policy holds. A delete
    with ``expunge=True`` skips the bin whatever the policy. Setting them takes a platform
    admin."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self) -> DeletionPoliciesModel:
        """The policy of each kind."""
        return self._client.call(DeletionPoliciesModel, "GET", "/deletion-policies")

    def set(
        self,
        policies: DeletionPoliciesModel | None = None,
        *,
        vm: Policy | None = None,
        volume: Policy | None = None,
        image: Policy | None = None,
    ) -> Operation:
        """Set the policies: all three from ``policies``, or only the kinds given as keywords
        (``set(vm={"policy": "never"})``; the others are read first and kept as they are;
        keywords given with ``policies`` replace its kinds). New policies apply to the next
        deletes: entries already in the bin keep their ``expunge_at``. ``InvalidInput``
        (before any request) for a bad policy or retention."""
        given = {
            k: p for k, p in (("vm", vm), ("volume", volume), ("image", image)) if p is not None
        }
        if policies is None and not given:
            raise InvalidInput("give the policies, or vm=, volume= or image=")
        base = policies if policies is not None else self.get()
        kinds: dict[str, KindPolicy] = {}
        for kind in ("vm", "volume", "image"):
            p = given.get(kind, getattr(base, kind))
            kinds[kind] = p if isinstance(p, KindPolicy) else build(KindPolicy, **dict(p))
        body = build(DeletionPoliciesModel, **kinds)
        return self._client.operation("PUT", "/deletion-policies", body=body)
