"""The agent's data-volume backends by pool type (see ``backend.VolumeBackend``)."""

from __future__ import annotations

from collections.abc import Mapping

from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import VolumeBackend
from corral.agent.storage.iscsi import IscsiBackend
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef
from corral.api.errors import InvalidInput


class Backends:
    """The backend of each pool type this agent supports."""

    def __init__(self, backends: Mapping[str, VolumeBackend]) -> None:
        self._backends = dict(backends)

    def for_pool(self, pool: PoolRef) -> VolumeBackend:
        """The backend of ``pool.type``; ``InvalidInput`` (context ``supported``) if this agent
        has none."""
        backend = self._backends.get(pool.type)
        if backend is None:
            raise InvalidInput(
                f"this host cannot use {pool.type} pools",
                pool_id=pool.id,
                type=pool.type,
                supported=sorted(self._backends),
            )
        return backend

    @property
    def types(self) -> list[str]:
        return sorted(self._backends)


def real_backends() -> Backends:
    """The backends of a real host: ``local``, ``nfs`` and ``iscsi`` (QEMU's userspace clients)
    and ``rbd``."""
    return Backends(
        {
            "local": LocalBackend(),
            "nfs": NfsBackend(),
            "iscsi": IscsiBackend(),
            "rbd": RbdBackend(),
        }
    )


def simulated_backends(
    host_name: str, faults: FaultPlan | None = None, capacity_gb: float = 1000.0
) -> Backends:
    """One in-memory ``SimulatedBackend`` serving every pool type (local, nfs, iscsi, rbd),
    ``capacity_gb`` per pool."""
    backend = SimulatedBackend(host_name=host_name, faults=faults, capacity_gb=capacity_gb)
    return Backends({t: backend for t in ("local", "nfs", "iscsi", "rbd")})
