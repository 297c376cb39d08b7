"""Storage pools: where VM disks live (a directory on each host, an NFS export, an iSCSI target or
a Ceph RBD pool), attached to the clusters whose hosts may use them.

Connection settings are typed per pool type (``settings`` must be the model of ``type``);
secrets (an RBD cephx key, iSCSI CHAP credentials) are never part of them: they are sent once as
``credentials``, sealed at rest by the server and never returned (``has_credentials`` says whether
the pool holds some).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, StringConstraints, ValidationError, model_validator

from corral.api.common import Model, Name, Ref, Resource


class PoolType(StrEnum):
    local = "local"
    nfs = "nfs"
    iscsi = "iscsi"
    rbd = "rbd"


class PoolState(StrEnum):
    """``enabled``: new volumes may be placed on it; ``maintenance``: existing volumes stay
    usable, no new ones, and it may be deleted while attached; ``disabled``: not used."""

    enabled = "enabled"
    maintenance = "maintenance"
    disabled = "disabled"


CREDENTIAL_TYPES: frozenset[PoolType] = frozenset({PoolType.iscsi, PoolType.rbd})
"""The pool types that take ``credentials`` (RBD: the cephx key; iSCSI: CHAP ``user:secret``)."""

HostName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.:\[\]-]+$")
]
"""A host name or IP address (IPv6 in brackets when a port follows)."""
HostPort = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=260, pattern=r"^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$"
    ),
]
"""``host``, ``host:port`` or ``[ipv6]:port``."""
Credentials = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or "\0" in value or ".." in value.split("/"):
        raise ValueError("an absolute path without '..' is expected")
    return value


AbsolutePath = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_absolute_path)
]
"""An absolute path without ``..``."""


class LocalSettings(Model):
    """A directory on every host of the attached clusters (qcow2 files)."""

    path: AbsolutePath = Field(description="absolute directory path")


class NfsSettings(Model):
    """An NFS export every host of the attached clusters uses."""

    server: HostName
    export: AbsolutePath = Field(description="the exported path")


class IscsiSettings(Model):
    """An iSCSI target whose LUNs are the pool's raw volumes."""

    portal: HostPort = Field(description="the target's portal: host or host:port (3260)")
    iqn: str = Field(
        max_length=223,
        pattern=r"^iqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+(:[^\s]+)?$",
        description="the target's IQN (iqn.YYYY-MM.reversed.domain[:name])",
    )


class RbdSettings(Model):
    """A Ceph RBD pool (the cephx key goes in ``credentials``)."""

    monitors: list[HostPort] = Field(min_length=1, max_length=16, description="monitor addresses")
    pool: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    user: str = Field("admin", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")


PoolSettings = LocalSettings | NfsSettings | IscsiSettings | RbdSettings
SETTINGS: dict[str, type[Model]] = {
    "local": LocalSettings,
    "nfs": NfsSettings,
    "iscsi": IscsiSettings,
    "rbd": RbdSettings,
}
"""The settings model of each pool type."""


class PoolCapacity(Model):
    """Sizes in GB: ``total`` of the backing store, ``used`` on it, ``allocated`` to volumes
    (thin volumes may allocate up to ``total x overcommit``). ``total`` and ``used`` are what
    the hosts report (a local pool: the sums over its hosts; a shared one: the latest report);
    zero until one reports it."""

    total_gb: float = 0
    used_gb: float = 0
    allocated_gb: float = 0


class PoolHosts(Model):
    """How many hosts report the pool usable (``ok``) and how many cannot use it (``failed``)."""

    ok: int = 0
    failed: int = 0


class PoolHostReport(Model):
    """What one host last reported of a pool (``GET /storage-pools/{ref}/hosts``)."""

    host_id: str
    host_name: str
    ok: bool
    total_gb: float = Field(description="the backing store's size as this host sees it")
    free_gb: float
    error: str | None = Field(None, description="why the host cannot use the pool")
    updated_at: datetime


class StoragePool(Resource):
    type: PoolType
    state: PoolState
    settings: PoolSettings = Field(description="connection settings of the pool's type")
    cluster_ids: list[str] = Field(description="the clusters attached (their hosts use the pool)")
    has_credentials: bool = Field(description="whether credentials are stored (never shown)")
    overcommit: float = Field(description="thin provisioning ratio: allocatable = total x this")
    capacity: PoolCapacity
    hosts: PoolHosts = Field(
        default_factory=PoolHosts, description="hosts of the attached clusters reporting it"
    )


def typed_settings(pool_type: str, settings: Any) -> Model:
    """``settings`` validated as the settings model of ``pool_type``; ``ValueError`` naming every
    problem (one error instead of one per member of the union)."""
    try:
        return SETTINGS[pool_type].model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(f"settings of a {pool_type} pool: {problems}") from None


def _settings_match(pool_type: str, settings: Model) -> None:
    wanted = SETTINGS[pool_type]
    if not isinstance(settings, wanted):
        fields = ", ".join(wanted.model_fields)
        raise ValueError(f"settings of a {pool_type} pool are: {fields}")


class StoragePoolCreate(Model):
    name: Name
    type: PoolType
    settings: PoolSettings = Field(description="the connection settings of ``type``")
    credentials: Credentials | None = Field(
        None,
        description="iscsi and rbd only: CHAP ``user:secret`` or the cephx key; sealed, never shown",
    )
    overcommit: float = Field(1.0, gt=0, le=100)
    clusters: list[Ref] = Field(default_factory=list, max_length=256, description="ids or names")

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        pool_type = data.get("type") if isinstance(data, dict) else None
        if isinstance(pool_type, str) and pool_type in SETTINGS and "settings" in data:
            data = {**data, "settings": typed_settings(pool_type, data["settings"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        _settings_match(self.type, self.settings)
        if self.credentials is not None and self.type not in CREDENTIAL_TYPES:
            raise ValueError(f"a {self.type} pool takes no credentials")
        return self


class StoragePoolUpdate(Model):
    """Fields to change (``None``: unchanged). ``credentials`` replaces the stored ones."""

    state: PoolState | None = None
    overcommit: float | None = Field(None, gt=0, le=100)
    credentials: Credentials | None = None


class PoolClusterAttach(Model):
    cluster: Ref = Field(description="cluster id or name")


class PoolLun(Model):
    """A LUN of an iscsi pool's target, as its hosts last reported it, and the volume that
    uses it (None: free)."""

    lun: int
    size_gb: float
    volume_id: str | None = None
