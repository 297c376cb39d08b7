"""Switches, port groups, subnets and IPAM through REST over the real server (SQLite; the
parallel allocations on PostgreSQL too): CRUD, every refusal (each leaving the tables as they
were), the segment rules, IPv4 and IPv6 subnets, static and next-free allocations, a full subnet,
releases, 100 parallel allocations that never hand out an address twice."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from corral.server.app import ServerHandle, start
from corral.server.db.tables import (
    HostRow,
    IpAllocationRow,
    PortGroupRow,
    SubnetRow,
    SwitchClusterRow,
    SwitchRow,
    SwitchUplinkRow,
    UserRow,
)
from corral.server.db.types import new_id
from corral.server.services import ipam
from corral.server.settings import ServerSettings
from tests.integration.identity.admin import done, names, refused

ADMIN_PW = "pw-admin-1"
USER_PW = "correct horse battery staple 42"
TABLES = (SwitchRow, SwitchClusterRow, SwitchUplinkRow, PortGroupRow, SubnetRow, IpAllocationRow)


async def _start(tmp_path: Path, database_url: str | None) -> ServerHandle:
    settings = ServerSettings(
        data_dir=tmp_path, port=0, tls=False, admin_password=ADMIN_PW, database_url=database_url
    )
    return await start(settings, listen=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    handle = await _start(tmp_path, None)
    try:
        yield handle
    finally:
        await handle.stop()


@pytest.fixture
async def any_db_server(tmp_path: Path, database_url: str | None) -> AsyncIterator[ServerHandle]:
    """The server on SQLite, then on PostgreSQL."""
    handle = await _start(tmp_path, database_url)
    try:
        yield handle
    finally:
        await handle.stop()


async def _login(server: ServerHandle, name: str, password: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=server.app), base_url="http://t/api/v1", timeout=120
    )
    r = await c.post("/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return c


@pytest.fixture
async def api(server: ServerHandle) -> AsyncIterator[httpx.AsyncClient]:
    c = await _login(server, "admin", ADMIN_PW)
    try:
        yield c
    finally:
        await c.aclose()


async def _snapshot(server: ServerHandle) -> list[list[tuple[Any, ...]]]:
    """Every row of the network tables: a refused call must leave this unchanged."""
    out = []
    async with server.services.sessionmaker() as s:
        for table in TABLES:
            cols = list(table.__table__.columns)  # type: ignore[attr-defined]
            rows = await s.execute(select(*cols))
            out.append(sorted(tuple(str(v) for v in r) for r in rows))
    return out


async def _inventory(server: ServerHandle, api: httpx.AsyncClient) -> dict[str, str]:
    """Zone z1, clusters c1 and c2 with one host row each (h1, h2): names -> ids."""
    done(await api.post("/zones", json={"name": "z1"}))
    ids = {}
    for c in ("c1", "c2"):
        ids[c] = done(await api.post("/clusters", json={"name": c, "zone": "z1"}))["target_id"]
    async with server.services.sessionmaker.begin() as s:
        for h, c in (("h1", "c1"), ("h2", "c2")):
            ids[h] = new_id()
            s.add(HostRow(id=ids[h], name=h, cluster_id=ids[c], url="http://x", token_sealed="x",
                          token_digest=new_id(), status="disconnected"))  # fmt: skip
    return ids


async def test_switch_crud_clusters_and_uplinks(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    ids = await _inventory(server, api)
    body = {"name": "sw1", "uplink": "bond0", "mtu": 9000, "clusters": ["c1", ids["c1"]],
            "uplinks": [{"host": "h1", "interface": "eth1"}], "description": "fabric"}  # fmt: skip
    op = done(await api.post("/switches", json=body))
    assert (op["type"], op["target_type"]) == ("switch.create", "switch")
    r = await api.get("/switches/sw1")
    sw = r.json()
    assert r.headers["ETag"] == sw["etag"] and sw["id"] == op["target_id"]
    assert (sw["uplink"], sw["mtu"], sw["description"]) == ("bond0", 9000, "fabric")
    assert sw["clusters"] == [ids["c1"]] and sw["uplinks"] == {ids["h1"]: "eth1"}

    # refusals change nothing
    before = await _snapshot(server)
    refused(await api.post("/switches", json={"name": "sw1"}), 409, "name_taken")
    refused(await api.post("/switches", json={"name": "x", "clusters": ["nope"]}), 404, "not_found")
    bad_uplinks = [{"host": "h1", "interface": "eth1"}, {"host": ids["h1"], "interface": "eth2"}]
    r = await api.post("/switches", json={"name": "x", "uplinks": bad_uplinks})
    refused(r, 422, "invalid_input", field="uplinks", hosts=["h1"])
    r = await api.post(
        "/switches", json={"name": "x", "uplinks": [{"host": "hx", "interface": "e"}]}
    )
    refused(r, 404, "not_found")
    for bad in ({"name": "x", "uplink": "a-very-long-interface"}, {"name": "x", "mtu": 9001},
                {"name": "x", "uplink": "eth 0"}, {"name": "bad name"}):  # fmt: skip
        refused(await api.post("/switches", json=bad), 422, "invalid_input")
    refused(await api.post("/switches/sw1/clusters/nope"), 404, "not_found")
    refused(await api.delete("/switches/sw1/clusters/nope"), 404, "not_found")
    assert await _snapshot(server) == before

    # attach (twice: no change), detach (not attached: no change)
    assert done(await api.post("/switches/sw1/clusters/c2"))["type"] == "switch.attach"
    done(await api.post(f"/switches/sw1/clusters/{ids['c2']}"))
    assert (await api.get("/switches/sw1")).json()["clusters"] == sorted([ids["c1"], ids["c2"]])
    assert done(await api.delete("/switches/sw1/clusters/c1"))["type"] == "switch.detach"
    done(await api.delete("/switches/sw1/clusters/c1"))
    assert (await api.get("/switches/sw1")).json()["clusters"] == [ids["c2"]]

    # update: uplinks replaced as a whole, rename, ETag
    etag = (await api.get("/switches/sw1")).headers["ETag"]
    patch = {"uplinks": [{"host": "h2", "interface": "eth9"}], "mtu": 1600, "name": "fabric1"}
    done(await api.patch("/switches/sw1", json=patch, headers={"If-Match": etag}))
    sw = (await api.get("/switches/fabric1")).json()
    assert sw["uplinks"] == {ids["h2"]: "eth9"} and sw["mtu"] == 1600
    r = await api.patch("/switches/fabric1", json={"mtu": 1500}, headers={"If-Match": etag})
    refused(r, 412, "precondition_failed")
    done(await api.post("/switches", json={"name": "sw2"}))
    refused(await api.patch("/switches/sw2", json={"name": "fabric1"}), 409, "name_taken")
    done(await api.patch("/switches/fabric1", json={"uplinks": []}))
    assert (await api.get("/switches/fabric1")).json()["uplinks"] == {}

    # query and tags
    page = (await api.get("/switches", params={"q": "mtu>1500", "sort": "name"})).json()
    assert names(page) == ["fabric1"]
    done(await api.post("/switches/sw2/tags", json={"tags": ["dc=1"]}))
    assert names((await api.get("/switches", params={"tag": "dc=1"})).json()) == ["sw2"]

    # a deleted cluster or host leaves the switch
    done(
        await api.patch("/switches/fabric1", json={"uplinks": [{"host": "h1", "interface": "e1"}]})
    )
    async with server.services.sessionmaker.begin() as s:
        for h in ("h1", "h2"):
            await s.delete(await s.get_one(HostRow, ids[h]))
    done(await api.delete("/clusters/c2"))
    sw = (await api.get("/switches/fabric1")).json()
    assert sw["clusters"] == [] and sw["uplinks"] == {}
    assert done(await api.delete("/switches/fabric1"))["type"] == "switch.delete"
    refused(await api.get("/switches/fabric1"), 404, "not_found")


async def test_port_group_segment_rules(server: ServerHandle, api: httpx.AsyncClient) -> None:
    for name, mtu in (("sw1", 9000), ("sw2", 1500)):
        done(await api.post("/switches", json={"name": name, "mtu": mtu}))

    async def pg(name: str, switch: str, type: str, segment: int | None = None) -> httpx.Response:
        body = {"name": name, "switch": switch, "type": type, "segment_id": segment}
        return await api.post("/port-groups", json=body)

    done(await pg("flat1", "sw1", "flat"))
    done(await pg("flat2", "sw2", "flat"))  # one flat per switch
    done(await pg("v100a", "sw1", "vlan", 100))
    done(await pg("v100b", "sw2", "vlan", 100))  # a VLAN id once per switch
    done(await pg("x5000", "sw1", "vxlan", 5000))
    before = await _snapshot(server)
    for args, holder in (
        (("f", "sw1", "flat"), "flat1"),
        (("v", "sw1", "vlan", 100), "v100a"),
        (("x", "sw2", "vxlan", 5000), "x5000"),  # a VNI once in the platform
    ):
        err = refused(await pg(*args), 409, "name_taken", reason="segment_taken", port_group=holder)
        assert holder in err["message"]
    refused(await pg("flat1", "sw2", "vlan", 7), 409, "name_taken", name="flat1")
    refused(await pg("n", "nope", "flat"), 404, "not_found")
    for args in (("n", "sw1", "vlan", 0), ("n", "sw1", "vlan", 4095), ("n", "sw1", "vlan"),
                 ("n", "sw1", "flat", 3), ("n", "sw1", "vxlan", 1 << 24), ("n", "sw1", "gre", 1)):  # fmt: skip
        refused(await pg(*args), 422, "invalid_input")
    assert await _snapshot(server) == before

    # mtu: the switch's, less 50 on vxlan; it follows the switch
    got = {
        p["name"]: p for p in (await api.get("/port-groups", params={"limit": 50})).json()["items"]
    }
    assert (got["x5000"]["mtu"], got["flat1"]["mtu"], got["flat2"]["mtu"]) == (8950, 9000, 1500)
    assert (got["x5000"]["type"], got["x5000"]["segment_id"], got["flat1"]["segment_id"]) == (
        "vxlan", 5000, None)  # fmt: skip
    done(await api.patch("/switches/sw1", json={"mtu": 1550}))
    assert (await api.get("/port-groups/x5000")).json()["mtu"] == 1500

    # filters by switch (name alias, relation, id), type, segment
    sw2 = (await api.get("/switches/sw2")).json()["id"]
    assert names((await api.get("/port-groups", params={"switch": "sw2", "sort": "name"})).json()) == [
        "flat2", "v100b"]  # fmt: skip
    q = {"q": "switch.name=sw1,type=in:vlan|vxlan", "sort": "-name"}
    assert names((await api.get("/port-groups", params=q)).json()) == ["x5000", "v100a"]
    assert (await api.get("/port-groups", params={"switch_id": sw2})).json()["total"] == 2
    assert names((await api.get("/port-groups", params={"q": "segment_id>=100"})).json()) != []
    refused(await api.get("/port-groups", params={"q": "type=gre"}), 400, "invalid_query")
    r = await api.get("/port-groups", params={"fields": "name,switch.name", "q": "name=flat2"})
    assert r.json()["items"] == [{"name": "flat2", "switch": {"name": "sw2"}}]

    # update: name and description only; then deletes and their refusals
    done(await api.patch("/port-groups/v100a", json={"name": "prod", "description": "p"}))
    assert (await api.get("/port-groups/prod")).json()["description"] == "p"
    refused(await api.patch("/port-groups/prod", json={"name": "flat1"}), 409, "name_taken")
    refused(await api.patch("/port-groups/prod", json={"segment_id": 5}), 422, "invalid_input")
    before = await _snapshot(server)
    err = refused(await api.delete("/switches/sw1"), 409, "in_use")
    assert err["context"]["port_groups"] == ["flat1", "prod", "x5000"]
    assert await _snapshot(server) == before
    for name in ("flat1", "prod", "x5000"):
        done(await api.delete(f"/port-groups/{name}"))
    done(await api.delete("/switches/sw1"))
    done(await pg("v100c", "sw2", "vxlan", 100))  # the VNI was freed... and VLAN 100 != VNI 100


async def _network(api: httpx.AsyncClient, pg: str = "pg1") -> None:
    done(await api.post("/switches", json={"name": "sw1"}))
    done(await api.post("/port-groups", json={"name": pg, "switch": "sw1", "type": "vlan",
                                              "segment_id": 10}))  # fmt: skip


async def test_subnet_validation_refusals(server: ServerHandle, api: httpx.AsyncClient) -> None:
    await _network(api)
    done(await api.post("/port-groups", json={"name": "pg2", "switch": "sw1", "type": "flat"}))
    done(
        await api.post("/subnets", json={"name": "net", "port_group": "pg1", "cidr": "10.0.0.0/24"})
    )
    before = await _snapshot(server)

    def sub(**extra: Any) -> dict[str, Any]:
        return {"name": "s", "port_group": "pg1", "cidr": "10.1.0.0/24", **extra}

    r = await api.post("/subnets", json=sub(ranges=[{"start": "10.1.0.9", "end": "10.1.0.5"},
                                                    {"start": "10.1.0.250", "end": "10.1.1.3"}]))  # fmt: skip
    err = refused(r, 422, "invalid_input", field="ranges")
    assert [x["problem"] for x in err["context"]["ranges"]] == [
        "start after end",
        "outside the CIDR",
    ]
    r = await api.post("/subnets", json=sub(ranges=[{"start": "10.1.0.10", "end": "10.1.0.20"},
                                                    {"start": "10.1.0.15", "end": "10.1.0.30"}]))  # fmt: skip
    err = refused(r, 422, "invalid_input", field="ranges")
    assert err["context"]["overlaps"] == [[{"start": "10.1.0.10", "end": "10.1.0.20"},
                                           {"start": "10.1.0.15", "end": "10.1.0.30"}]]  # fmt: skip
    for gw in ("10.1.0.0", "10.1.0.255", "10.2.0.1"):
        refused(await api.post("/subnets", json=sub(gateway=gw)), 422, "invalid_input", gateway=gw)
    r = await api.post("/subnets", json=sub(gateway="10.1.0.1", no_gateway=True))
    refused(r, 422, "invalid_input", field="gateway")
    r = await api.post("/subnets", json=sub(reserved=["10.1.0.7", "10.9.9.9"]))
    refused(r, 422, "invalid_input", field="reserved", reserved=["10.9.9.9"])
    r = await api.post("/subnets", json=sub(cidr="10.0.0.128/25"))  # overlaps "net"
    refused(r, 422, "invalid_input", field="cidr", subnets=[{"name": "net", "cidr": "10.0.0.0/24"}])
    refused(await api.post("/subnets", json=sub(cidr="10.1.0.1/24")), 422, "invalid_input")
    refused(await api.post("/subnets", json=sub(cidr="nonsense")), 422, "invalid_input")
    refused(await api.post("/subnets", json=sub(name="net")), 409, "name_taken")
    refused(await api.post("/subnets", json=sub(port_group="nope")), 404, "not_found")
    assert await _snapshot(server) == before

    # the same CIDR on another port group is fine; so is IPv6 beside IPv4
    done(await api.post("/subnets", json=sub(name="other", port_group="pg2", cidr="10.0.0.0/24")))
    done(
        await api.post(
            "/subnets", json=sub(name="v6", cidr="fd00:1::/64", dns_servers=["fd00::53"])
        )
    )
    page = (await api.get("/subnets", params={"port_group": "pg1", "sort": "name"})).json()
    assert names(page) == ["net", "v6"]
    q = {"q": "port_group.switch.name=sw1,ip_version=6"}
    assert names((await api.get("/subnets", params=q)).json()) == ["v6"]
    refused(await api.get("/subnets", params={"q": "ranges=x"}), 400, "invalid_query")

    # deleting a port group with subnets is refused, naming them
    before = await _snapshot(server)
    refused(await api.delete("/port-groups/pg1"), 409, "in_use", subnets=["net", "v6"])
    assert await _snapshot(server) == before


async def _hold(api: httpx.AsyncClient, subnet: str, address: str | None = None) -> str:
    body = {} if address is None else {"address": address}
    r = await api.post(f"/subnets/{subnet}/allocations", json=body)
    assert r.status_code == 202, r.text
    held = r.json()
    assert held["status"] == "succeeded" and held["type"] == "subnet.allocate"
    assert r.headers["Location"] == f"/api/v1/operations/{held['id']}"
    address_: str = held["allocation"]["address"]
    return address_


async def _give_to_nic(server: ServerHandle, subnet: str, address: str) -> None:
    """An address taken by a VM NIC, as the VM services will (``ipam.allocate`` in their
    transaction)."""
    async with server.services.sessionmaker() as s:
        row = await s.scalar(select(SubnetRow).where(SubnetRow.name == subnet))
        assert row is not None
        assert await ipam.allocate(s, row, address, nic_id="n" * 32, vm_id="v" * 32) == address
        await s.commit()


async def test_ipv4_allocations_static_full_release(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    await _network(api)
    body = {"name": "s4", "port_group": "pg1", "cidr": "10.0.0.0/29", "reserved": ["10.0.0.4"]}
    done(await api.post("/subnets", json=body))
    s4 = (await api.get("/subnets/s4")).json()
    assert s4["gateway"] == "10.0.0.1" and s4["ranges"] == [
        {"start": "10.0.0.2", "end": "10.0.0.6"}
    ]
    assert (s4["ip_version"], s4["used"], s4["available"], s4["dhcp"]) == (4, 0, 4, True)

    assert await _hold(api, "s4") == "10.0.0.2"
    assert await _hold(api, "s4", "10.0.0.6") == "10.0.0.6"
    before = await _snapshot(server)
    path = "/subnets/s4/allocations"
    refused(await api.post(path, json={"address": "10.0.0.6"}), 409, "in_use",
            reason="address_in_use", address="10.0.0.6", nic_id=None)  # fmt: skip
    for address, reason in (("10.0.0.1", "gateway"), ("10.0.0.4", "reserved"),
                            ("10.0.0.0", "network"), ("10.0.0.7", "broadcast"),
                            ("10.0.1.1", "outside")):  # fmt: skip
        r = await api.post(path, json={"address": address})
        refused(r, 422, "invalid_input", reason=reason, address=address)
    refused(await api.post(path, json={"address": "fd00::1"}), 422, "invalid_input")
    refused(await api.post(path, json={"address": "10.0.0.x"}), 422, "invalid_input")
    assert await _snapshot(server) == before

    assert await _hold(api, "s4") == "10.0.0.3"
    assert await _hold(api, "s4") == "10.0.0.5"
    before = await _snapshot(server)
    refused(await api.post(path, json={}), 409, "conflict", reason="subnet_full", subnet="s4")
    assert await _snapshot(server) == before
    s4 = (await api.get("/subnets/s4")).json()
    assert (s4["used"], s4["available"]) == (4, 0)
    listed = (await api.get(path)).json()
    assert [a["address"] for a in listed["items"]] == [
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.5",
        "10.0.0.6",
    ]
    assert listed["total"] == 4 and all(a["nic_id"] is None for a in listed["items"])

    # release: the lowest free comes back first; not allocated: 404
    op = done(await api.delete(f"{path}/10.0.0.3"))
    assert (op["type"], op["target_id"]) == ("subnet.release", s4["id"])
    refused(await api.delete(f"{path}/10.0.0.3"), 404, "not_found")
    refused(await api.delete(f"{path}/nonsense"), 422, "invalid_input")
    assert await _hold(api, "s4") == "10.0.0.3"

    # an address of a NIC is not released by hand
    done(await api.delete(f"{path}/10.0.0.3"))
    await _give_to_nic(server, "s4", "10.0.0.3")
    before = await _snapshot(server)
    refused(await api.delete(f"{path}/10.0.0.3"), 409, "in_use", nic_id="n" * 32, vm_id="v" * 32)
    refused(await api.post(path, json={"address": "10.0.0.3"}), 409, "in_use", vm_id="v" * 32)

    # reserving an allocated address is refused; deleting a subnet with allocations too
    refused(await api.patch("/subnets/s4", json={"reserved": ["10.0.0.4", "10.0.0.5"]}), 409,
            "in_use", addresses=["10.0.0.5"])  # fmt: skip
    err = refused(await api.delete("/subnets/s4"), 409, "in_use", allocations=4)
    assert err["context"]["addresses"] == ["10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
    assert err["context"]["vms"] == ["v" * 32]
    assert await _snapshot(server) == before

    # narrower ranges leave allocations outside; counts stay exact
    done(await api.patch("/subnets/s4", json={"ranges": [{"start": "10.0.0.5", "end": "10.0.0.6"}],
                                              "reserved": [], "dns_servers": ["1.1.1.1"]}))  # fmt: skip
    s4 = (await api.get("/subnets/s4")).json()
    assert (s4["used"], s4["available"], s4["reserved"]) == (4, 0, [])
    done(await api.delete(f"{path}/10.0.0.6"))
    assert (await api.get("/subnets/s4")).json()["available"] == 1
    done(await api.patch("/subnets/s4", json={"ranges": []}))  # back to the default
    s4 = (await api.get("/subnets/s4")).json()
    assert s4["ranges"] == [{"start": "10.0.0.2", "end": "10.0.0.6"}] and s4["available"] == 2

    async with server.services.sessionmaker.begin() as s:
        assert await ipam.release_nic(s, "n" * 32) == 1
    for address in ("10.0.0.2", "10.0.0.5"):
        done(await api.delete(f"{path}/{address}"))
    assert done(await api.delete("/subnets/s4"))["type"] == "subnet.delete"


async def test_ipv6_subnet_allocates_without_enumerating(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    await _network(api)
    body = {"name": "s6", "port_group": "pg1", "cidr": "fd00:a::/64", "reserved": ["fd00:a::3"]}
    done(await api.post("/subnets", json=body))
    s6 = (await api.get("/subnets/s6")).json()
    assert (s6["ip_version"], s6["gateway"]) == (6, "fd00:a::1")
    assert s6["ranges"] == [{"start": "fd00:a::2", "end": "fd00:a::ffff:ffff:ffff:ffff"}]
    assert s6["available"] == 2**64 - 3
    got = [await _hold(api, "s6") for _ in range(30)]
    assert got[:3] == ["fd00:a::2", "fd00:a::4", "fd00:a::5"] and len(set(got)) == 30
    last = "fd00:a::ffff:ffff:ffff:ffff"  # no broadcast in IPv6
    assert await _hold(api, "s6", "fd00:a:0:0:ffff:ffff:ffff:ffff") == last
    refused(await api.post("/subnets/s6/allocations", json={"address": "fd00:a::"}), 422,
            "invalid_input", reason="network")  # fmt: skip
    refused(await api.post("/subnets/s6/allocations", json={"address": "10.0.0.1"}), 422,
            "invalid_input")  # fmt: skip
    assert (await api.get("/subnets/s6")).json()["available"] == 2**64 - 3 - 31
    done(await api.delete(f"/subnets/s6/allocations/{last.replace(':', '%3A')}"))
    done(await api.delete("/subnets/s6/allocations/fd00:a:0::4"))  # any spelling of it
    assert await _hold(api, "s6") == "fd00:a::4"
    r = await api.post("/subnets", json={"name": "s6b", "port_group": "pg1", "cidr": "fd00:a::/48"})
    refused(r, 422, "invalid_input", field="cidr")


async def test_users_read_port_groups_and_subnets_not_holders(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    await _network(api)
    done(
        await api.post("/subnets", json={"name": "s4", "port_group": "pg1", "cidr": "10.0.0.0/28"})
    )
    await _give_to_nic(server, "s4", "10.0.0.9")
    async with server.services.sessionmaker.begin() as s:
        s.add(UserRow(name="joe", password_hash=PasswordHasher().hash(USER_PW)))
    server.services.callers.clear()
    joe = await _login(server, "joe", USER_PW)
    try:
        assert names((await joe.get("/port-groups")).json()) == ["pg1"]
        assert (await joe.get("/subnets/s4")).json()["used"] == 1
        [a] = (await joe.get("/subnets/s4/allocations")).json()["items"]
        assert a["address"] == "10.0.0.9" and a["nic_id"] is None and a["vm_id"] is None
        refused(await joe.get("/switches"), 403, "forbidden")
        refused(await joe.post("/subnets/s4/allocations", json={}), 403, "forbidden")
        refused(await joe.delete("/subnets/s4/allocations/10.0.0.9"), 403, "forbidden")
        refused(await joe.post("/port-groups", json={"name": "x", "switch": "sw1", "type": "flat"}),
                403, "forbidden")  # fmt: skip
        refused(await joe.delete("/subnets/s4"), 403, "forbidden")
    finally:
        await joe.aclose()
    [a] = (await api.get("/subnets/s4/allocations")).json()["items"]
    assert a["vm_id"] == "v" * 32


@pytest.mark.postgres
async def test_100_parallel_allocations_are_distinct(
    any_db_server: ServerHandle, database_url: str | None
) -> None:
    """100 holds at once over HTTP, then 100 ``ipam.allocate`` in separate sessions, then 10
    creates of one VLAN: never a duplicate (on PostgreSQL the allocators really race, and the
    losers retry)."""
    server = any_db_server
    api = await _login(server, "admin", ADMIN_PW)
    try:
        await _network(api)
        body = {"name": "big", "port_group": "pg1", "cidr": "10.8.0.0/24"}
        done(await api.post("/subnets", json=body))
        answers = await asyncio.gather(
            *(api.post("/subnets/big/allocations", json={}) for _ in range(100))
        )
        assert [r.status_code for r in answers] == [202] * 100, [r.text for r in answers][:3]
        got = [r.json()["allocation"]["address"] for r in answers]
        assert len(set(got)) == 100
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.8.0.0/24") for a in got)
        assert "10.8.0.1" not in got  # the gateway
        big = (await api.get("/subnets/big")).json()
        assert (big["used"], big["available"]) == (100, 253 - 100)

        # through the service, each allocator in its own session and transaction
        done(await api.post("/subnets", json={**body, "name": "v6", "cidr": "fd00:8::/64"}))
        sm = server.services.sessionmaker
        async with sm() as s:
            row = await s.scalar(select(SubnetRow).where(SubnetRow.name == "v6"))
            assert row is not None

        async def one(i: int) -> str:
            async with sm() as s:
                address = await ipam.allocate(s, row, nic_id=f"{i:032d}", vm_id="v" * 32)
                await s.commit()
                return address

        direct = await asyncio.gather(*(one(i) for i in range(100)))
        assert len(set(direct)) == 100
        async with sm() as s:
            stored = list(await s.scalars(
                select(IpAllocationRow.address).where(IpAllocationRow.subnet_id == row.id)))  # fmt: skip
        assert sorted(stored) == sorted(direct)

        # one VLAN id asked 10 times at once: one port group, 9 clear refusals
        race = [{"name": f"race{i}", "switch": "sw1", "type": "vlan", "segment_id": 77}
                for i in range(10)]  # fmt: skip
        tries = await asyncio.gather(*(api.post("/port-groups", json=b) for b in race))
        assert sorted(r.status_code for r in tries) == [202] + [409] * 9
        winner = next(r for r in tries if r.status_code == 202).json()["target_id"]
        holder = (await api.get(f"/port-groups/{winner}")).json()["name"]
        for r in tries:
            if r.status_code == 409:
                refused(r, 409, "name_taken", reason="segment_taken", port_group=holder)
    finally:
        await api.aclose()
