"""Field selection over API models, and the ready-made specs matching the API models' names."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import BaseModel

from corral.api.auth import AccessKey
from corral.api.errors import InvalidInput
from corral.api.hosts import Host
from corral.api.identity import Member, Project, Role, User
from corral.api.images import Image
from corral.api.networks import PortGroup, Subnet, Switch
from corral.api.offerings import Offering
from corral.api.operations import Operation
from corral.api.security_groups import SecurityGroup
from corral.api.snapshots import Snapshot
from corral.api.storage import StoragePool
from corral.api.vms import Vm
from corral.api.volumes import Volume
from corral.api.zones import Cluster, Zone
from corral.server.query import add_related, select_fields, split_fields, validate_fields
from corral.server.query.specs import ALL, VMS

HOST: dict[str, Any] = {
    "id": "h1",
    "name": "h1",
    "cluster_id": "c1",
    "capacity": {"cpus_total": 8, "cpus_used": 2},
    "facts": None,
    "status": "connected",
}


def test_select_fields_projects_nested_paths() -> None:
    assert select_fields(HOST, ["id", "capacity.cpus_used"]) == {
        "id": "h1",
        "capacity": {"cpus_used": 2},
    }
    assert select_fields(HOST, ["facts.hostname", "name"]) == {"facts": None, "name": "h1"}
    whole = {"capacity": {"cpus_total": 8, "cpus_used": 2}}
    assert select_fields(HOST, ["capacity.cpus_used", "capacity"]) == whole
    assert select_fields(HOST, ["capacity", "capacity.cpus_used"]) == whole
    assert HOST["capacity"] == {"cpus_total": 8, "cpus_used": 2}  # never modified
    assert select_fields(HOST, []) == HOST


@pytest.mark.parametrize(
    ("field", "allowed"),
    [("colour", "cluster_id"), ("capacity.colour", "capacity.cpus_used"), ("name.first", None)],
)
def test_select_fields_refuses_unknown(field: str, allowed: str | None) -> None:
    with pytest.raises(InvalidInput) as info:
        select_fields(HOST, ["id", field])
    assert info.value.context["field"] == field
    assert allowed is None or allowed in info.value.context["allowed"]


def test_validate_fields_uses_the_model_class() -> None:
    validate_fields(Host, ["id", "capacity.cpus_used", "facts.hostname", "last_heartbeat_at"])
    for bad, allowed in (("token", "url"), ("capacity.x", "capacity.cpus_total"), ("id.x", None)):
        with pytest.raises(InvalidInput) as info:
            validate_fields(Host, [bad])
        assert info.value.context["field"] == bad
        assert allowed is None or allowed in info.value.context["allowed"]


def test_add_related_nests_and_merges() -> None:
    merged = add_related(
        {"id": "vm1", "host": {"id": "h1"}},
        {"host.name": "h1", "host.cluster.zone.name": "alpha"},
    )
    assert merged == {
        "id": "vm1",
        "host": {"id": "h1", "name": "h1", "cluster": {"zone": {"name": "alpha"}}},
    }


def test_select_after_add_related_on_a_real_model() -> None:
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    vm = Vm(
        id="vm1",
        name="web",
        status="running",
        power_state="running",
        cpus=1,
        memory_mb=512,
        disk_gb=1,
        image_id=None,
        host_id="h1",
        created_at=now,
        updated_at=now,
    )
    wanted = ["id", "name", "host.name"]
    own, related = split_fields(VMS, wanted)
    validate_fields(Vm, own)
    doc = add_related(vm.model_dump(mode="json"), dict.fromkeys(related, "h1"))
    assert select_fields(doc, wanted) == {"id": "vm1", "name": "web", "host": {"name": "h1"}}


MODELS: dict[str, type[BaseModel]] = {
    "zone": Zone,
    "cluster": Cluster,
    "host": Host,
    "image": Image,
    "offering": Offering,
    "vm": Vm,
    "operation": Operation,
    "user": User,
    "project": Project,
    "role": Role,
    "member": Member,
    "access_key": AccessKey,
    "storage_pool": StoragePool,
    "volume": Volume,
    "snapshot": Snapshot,
    "security_group": SecurityGroup,
    "switch": Switch,
    "port_group": PortGroup,
    "subnet": Subnet,
}
NOT_IN_MODEL = {"member": {"id"}}
"""Spec fields a model does not show (the membership's own id only breaks sorting ties)."""


def test_every_spec_is_checked() -> None:
    assert set(MODELS) == set(ALL)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_spec_fields_are_api_model_fields(kind: str) -> None:
    spec = ALL[kind]
    shown = [f for f in spec.fields if f not in NOT_IN_MODEL.get(kind, set())]
    validate_fields(MODELS[kind], shown)
    for relation in spec.relations.values():
        assert relation.target().name in ALL
