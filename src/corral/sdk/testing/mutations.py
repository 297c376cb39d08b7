"""What each mutating call of the fake server does: validate, record, start an operation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from corral.api.errors import InUse, InvalidState, NameTaken, NoHostAvailable
from corral.api.hosts import Host, HostCapacity, HostCreate, HostFacts, HostStatus, HostUpdate
from corral.api.images import Image, ImageCreate, ImageStatus
from corral.api.offerings import Offering, OfferingCreate
from corral.api.operations import Operation
from corral.api.vms import PowerState, Vm, VmCreate, VmResize, VmStatus, VmStop
from corral.api.zones import Cluster, ClusterCreate, ClusterUpdate, Zone, ZoneCreate
from corral.sdk.testing.state import FakeState, new_id, now


def _stamp(name: str) -> dict[str, Any]:
    moment = now()
    return {"id": new_id(), "name": name, "created_at": moment, "updated_at": moment}


def _unique(table: dict[str, Any], name: str, kind: str) -> None:
    if any(item.name == name for item in table.values()):
        raise NameTaken(f"a {kind} named {name} exists already", kind=kind, name=name)


def create_zone(state: FakeState, body: ZoneCreate) -> Operation:
    _unique(state.zones, body.name, "zone")
    zone = Zone(**_stamp(body.name), description=body.description)
    state.zones[zone.id] = zone
    return state.start_operation("zone.create", "zone", zone.id, immediate=True)


def create_cluster(state: FakeState, body: ClusterCreate) -> Operation:
    _unique(state.clusters, body.name, "cluster")
    zone = state.find(state.zones, body.zone, "zone")
    fields = body.model_dump(exclude={"name", "zone"})
    cluster = Cluster(**_stamp(body.name), zone_id=zone.id, **fields)
    state.clusters[cluster.id] = cluster
    return state.start_operation("cluster.create", "cluster", cluster.id, immediate=True)


def create_offering(state: FakeState, body: OfferingCreate) -> Operation:
    _unique(state.offerings, body.name, "offering")
    offering = Offering(**_stamp(body.name), **body.model_dump(exclude={"name"}))
    state.offerings[offering.id] = offering
    return state.start_operation("offering.create", "offering", offering.id, immediate=True)


def add_host(state: FakeState, body: HostCreate) -> Operation:
    cluster = state.find(state.clusters, body.cluster, "cluster")
    name = body.name or body.url.split("//")[-1].split(":")[0]
    _unique(state.hosts, name, "host")
    facts = HostFacts(
        hostname=name,
        cpu_model="fake",
        cpu_cores=4,
        cpu_threads=4,
        memory_mb=8192,
        disk_gb_total=100,
        disk_gb_free=100,
        hypervisor="simulator",
        kvm_usable=False,
        driver="simulator",
    )
    capacity = HostCapacity(
        cpus_total=int(4 * cluster.cpu_overcommit),
        cpus_used=0,
        memory_mb_total=int(8192 * cluster.memory_overcommit),
        memory_mb_used=0,
        disk_gb_total=100,
        disk_gb_used=0,
    )
    host = Host(
        **_stamp(name),
        cluster_id=cluster.id,
        url=body.url,
        status=HostStatus.connecting,
        enabled=True,
        facts=facts,
        capacity=capacity,
    )
    state.hosts[host.id] = host

    def connected() -> None:
        state.hosts[host.id] = state.hosts[host.id].model_copy(
            update={"status": HostStatus.connected, "last_heartbeat_at": now()}
        )

    def undo() -> None:
        state.hosts.pop(host.id, None)

    return state.start_operation("host.add", "host", host.id, effect=connected, undo=undo)


def create_image(state: FakeState, body: ImageCreate) -> Operation:
    _unique(state.images, body.name, "image")
    image = Image(**_stamp(body.name), status=ImageStatus.importing, source_url=body.url)
    state.images[image.id] = image
    if body.url is None:
        return state.start_operation("image.create", "image", image.id, immediate=True)
    data = f"downloaded from {body.url}".encode()
    return state.start_operation(
        "image.import",
        "image",
        image.id,
        effect=lambda: _image_ready(state, image.id, data),
        undo=lambda: _set_image(state, image.id, status=ImageStatus.error),
    )


def upload_image(state: FakeState, ref: str, data: bytes) -> Operation:
    image = state.find(state.images, ref, "image")
    if image.status is not ImageStatus.importing:
        raise InvalidState(f"image {image.name} is {image.status}, not importing")
    return state.start_operation(
        "image.upload",
        "image",
        image.id,
        effect=lambda: _image_ready(state, image.id, data),
        undo=lambda: _set_image(state, image.id, status=ImageStatus.error),
    )


def _set_image(state: FakeState, image_id: str, **update: Any) -> None:
    state.images[image_id] = state.images[image_id].model_copy(update=update)


def _image_ready(state: FakeState, image_id: str, data: bytes) -> None:
    state.image_data[image_id] = data
    _set_image(
        state,
        image_id,
        status=ImageStatus.ready,
        format="qcow2" if data.startswith(b"QFI\xfb") else "raw",
        size_bytes=len(data),
        virtual_size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def create_vm(state: FakeState, body: VmCreate) -> Operation:
    _unique(state.vms, body.name, "vm")
    image = state.find(state.images, body.image, "image")
    if image.status is not ImageStatus.ready:
        raise InvalidState(f"image {image.name} is {image.status}")
    offering = state.find(state.offerings, body.offering, "offering") if body.offering else None
    cpus = body.cpus or (offering.cpus if offering else 1)
    memory_mb = body.memory_mb or (offering.memory_mb if offering else 512)
    disk_gb = body.disk_gb or (offering.disk_gb if offering else 10)
    vm = Vm(
        **_stamp(body.name),
        status=VmStatus.creating,
        power_state=PowerState.absent,
        cpus=cpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
        image_id=image.id,
        offering_id=offering.id if offering else None,
        host_id=None,
    )
    state.vms[vm.id] = vm
    reasons: dict[str, list[str]] = {}
    candidates = [state.find(state.hosts, body.host, "host")] if body.host else state.hosts.values()
    for host in candidates:
        why = []
        if not host.enabled:
            why.append("host is disabled")
        if host.capacity.cpus_total - host.capacity.cpus_used < cpus:
            why.append(f"not enough CPUs: {cpus} wanted")
        if host.capacity.memory_mb_total - host.capacity.memory_mb_used < memory_mb:
            why.append(f"not enough memory: {memory_mb} MiB wanted")
        reasons[host.name] = why
    fitting = [name for name, why in reasons.items() if not why]
    if not fitting and "vm.create" not in state.failures:
        state.failures["vm.create"] = NoHostAvailable(
            f"no host can run VM {vm.name}", hosts=reasons
        )
    host_id = state.find(state.hosts, fitting[0], "host").id if fitting else None
    status, power = (
        (VmStatus.running, PowerState.running)
        if body.start
        else (VmStatus.stopped, PowerState.stopped)
    )
    return state.start_operation(
        "vm.create",
        "vm",
        vm.id,
        effect=lambda: _set_vm(state, vm.id, status=status, power_state=power, host_id=host_id),
        undo=lambda: state.vms.pop(vm.id, None),
    )


def _set_vm(state: FakeState, vm_id: str, **update: Any) -> None:
    state.vms[vm_id] = state.vms[vm_id].model_copy(update=update)


_TRANSITIONS: dict[str, tuple[set[VmStatus], VmStatus, PowerState]] = {
    "start": ({VmStatus.stopped}, VmStatus.running, PowerState.running),
    "stop": ({VmStatus.running, VmStatus.paused}, VmStatus.stopped, PowerState.stopped),
    "reboot": ({VmStatus.running}, VmStatus.running, PowerState.running),
    "pause": ({VmStatus.running}, VmStatus.paused, PowerState.paused),
    "resume": ({VmStatus.paused}, VmStatus.running, PowerState.running),
    "resize": ({VmStatus.stopped}, VmStatus.stopped, PowerState.stopped),
}


def _vm_action(action: str) -> Callable[[FakeState, str, BaseModel | None], Operation]:
    def run(state: FakeState, ref: str, body: BaseModel | None) -> Operation:
        vm = state.find(state.vms, ref, "vm")
        allowed, status, power = _TRANSITIONS[action]
        if vm.status not in allowed:
            raise InvalidState(f"cannot {action} VM {vm.name}: it is {vm.status}", status=vm.status)
        update: dict[str, Any] = {"status": status, "power_state": power}
        if isinstance(body, VmResize):
            update.update(body.model_dump(exclude_none=True))
        return state.start_operation(
            f"vm.{action}", "vm", vm.id, effect=lambda: _set_vm(state, vm.id, **update)
        )

    return run


def update_cluster(state: FakeState, ref: str, body: ClusterUpdate) -> Operation:
    cluster = state.find(state.clusters, ref, "cluster")
    state.clusters[cluster.id] = cluster.model_copy(update=body.model_dump(exclude_none=True))
    return state.start_operation("cluster.update", "cluster", cluster.id, immediate=True)


def update_host(state: FakeState, ref: str, body: HostUpdate) -> Operation:
    host = state.find(state.hosts, ref, "host")
    state.hosts[host.id] = host.model_copy(update=body.model_dump(exclude_none=True))
    return state.start_operation("host.update", "host", host.id, immediate=True)


_USERS: dict[str, Callable[[FakeState, str], bool]] = {
    "zones": lambda s, i: any(c.zone_id == i for c in s.clusters.values()),
    "clusters": lambda s, i: any(h.cluster_id == i for h in s.hosts.values()),
    "hosts": lambda s, i: any(v.host_id == i for v in s.vms.values()),
    "images": lambda s, i: any(v.image_id == i for v in s.vms.values()),
}


def delete(state: FakeState, collection: str, ref: str) -> Operation:
    table = state.collection(collection)
    kind = collection.removesuffix("s")
    item = state.find(table, ref, kind)
    in_use = _USERS.get(collection)
    if in_use is not None and in_use(state, item.id):
        raise InUse(f"{kind} {item.name} is in use", kind=kind, ref=ref)
    if collection != "vms":
        del table[item.id]
        return state.start_operation(f"{kind}.delete", kind, item.id, immediate=True)
    _set_vm(state, item.id, status=VmStatus.deleting)
    return state.start_operation(
        "vm.delete", "vm", item.id, effect=lambda: state.vms.pop(item.id, None)
    )


CREATE: dict[str, tuple[type[BaseModel], Callable[[FakeState, Any], Operation]]] = {
    "zones": (ZoneCreate, create_zone),
    "clusters": (ClusterCreate, create_cluster),
    "hosts": (HostCreate, add_host),
    "images": (ImageCreate, create_image),
    "offerings": (OfferingCreate, create_offering),
    "vms": (VmCreate, create_vm),
}

UPDATE: dict[str, tuple[type[BaseModel], Callable[[FakeState, str, Any], Operation]]] = {
    "clusters": (ClusterUpdate, update_cluster),
    "hosts": (HostUpdate, update_host),
}

VM_ACTIONS: dict[str, tuple[type[BaseModel] | None, Callable[..., Operation]]] = {
    "start": (None, _vm_action("start")),
    "stop": (VmStop, _vm_action("stop")),
    "reboot": (None, _vm_action("reboot")),
    "pause": (None, _vm_action("pause")),
    "resume": (None, _vm_action("resume")),
    "resize": (VmResize, _vm_action("resize")),
}
