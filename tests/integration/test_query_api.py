"""The Query API of list endpoints over HTTP, on SQLite and PostgreSQL: ``q`` conditions on own and
related fields, sort, paging, field selection, ``count``, ``tag`` filters and the tag routes, and
visibility (a query never reaches what the caller may not see)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from corral.server.db.tables import ClusterRow, HostRow, TagRow, VmRow
from corral.server.db.types import new_id, utcnow
from corral.server.services import tags as tagging
from corral.up import Stack
from tests.integration.identity.admin import done, names, refused
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack

# name, memory_mb, power state, cluster, project ("a" or "b"), owner
VMS = [
    ("web1", 2048, "running", "c1", "a", "alice"),
    ("web2", 1024, "running", "c2", "a", "alice"),
    ("db1", 4096, "stopped", "c1", "a", "anna"),
    ("cache", 512, "running", "c1", "a", "alice"),
    ("other", 8192, "running", "c1", "b", "bob"),
]


async def _seed(stack: Stack, projects: dict[str, str], users: dict[str, str]) -> None:
    """Two clusters with one host each, and the VMs of ``VMS`` (rows, not guests: this is about
    querying, the VM lifecycle has its own tests)."""
    now = utcnow()
    async with stack.server.services.sessionmaker.begin() as s:
        zone_id = await s.scalar(select(ClusterRow.zone_id).limit(1))
        hosts: dict[str, str] = {}
        for c in ("c1", "c2"):
            cluster = ClusterRow(id=new_id(), name=c, zone_id=zone_id)
            host = HostRow(id=new_id(), name=f"h-{c}", cluster_id=cluster.id, url="http://x",
                           token_sealed="x", token_digest=new_id(),
                           status="disconnected")  # fmt: skip
            s.add_all([cluster, host])
            hosts[c] = host.id
        await s.flush()
        for i, (name, mem, state, c, p, owner) in enumerate(VMS):
            s.add(VmRow(id=new_id(), name=name, status="running" if state == "running" else
                        "stopped", power_state=state, cpus=1, memory_mb=mem, disk_gb=1,
                        host_id=hosts[c], claimed=False, vnc_password="x",
                        project_id=projects[p], owner_id=users[owner],
                        created_at=now + timedelta(seconds=i),
                        updated_at=now))  # fmt: skip


async def _user_id(admin: httpx.AsyncClient, name: str) -> str:
    r = await admin.get("/users", params={"name": name})
    uid: str = r.json()["items"][0]["id"]
    return uid


def _q(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return names(page.json())


@pytest.mark.postgres
async def test_query_api(tmp_path: Path, database_url: str | None) -> None:
    async with (
        running_stack(tmp_path, database_url=database_url) as stack,
        api_client(stack) as admin,
    ):
        pa, pb = await make_project(stack, "pa"), await make_project(stack, "pb")
        await make_user(stack, "alice", {pa: "member"})
        await make_user(stack, "anna", {pa: "project-admin"})
        await make_user(stack, "bob", {pb: "member"})
        users = {n: await _user_id(admin, n) for n in ("alice", "anna", "bob")}
        await _seed(stack, {"a": pa, "b": pb}, users)

        # conditions on own and related fields, the example
        q = "state=running,memory>=1024,host.cluster.name=c1"
        assert _q(await admin.get("/vms", params={"q": q})) == ["web1", "other"]
        assert _q(await admin.get("/vms", params={"q": "name~WEB*", "sort": "-memory"})) == [
            "web1",
            "web2",
        ]
        r = await admin.get("/vms", params={"q": "memory=in:512|4096", "sort": "name"})
        assert _q(r) == ["cache", "db1"]
        r = await admin.get("/vms", params={"q": "host.name=not-in:h-c1", "sort": "name"})
        assert _q(r) == ["web2"]
        r = await admin.get("/vms", params={"q": "image_id=null,memory<1024"})
        assert _q(r) == ["cache"]
        r = await admin.get("/vms", params={"q": "project.name=pb"})
        assert _q(r) == ["other"]
        r = await admin.get("/vms", params={"q": "owner.name=anna"})
        assert _q(r) == ["db1"]
        # a legacy field=value filter is the same as the condition
        assert _q(await admin.get("/vms", params={"power_state": "stopped"})) == ["db1"]
        # values that look like SQL are just values
        assert _q(await admin.get("/vms", params={"q": "name=\"x' OR '1'='1\""})) == []

        # sort on several keys, paging with a stable total
        r = await admin.get("/vms", params={"sort": "host.cluster.name,-memory", "limit": 2})
        page = r.json()
        assert names(page) == ["other", "db1"] and page["total"] == 5
        r = await admin.get(
            "/vms", params={"sort": "host.cluster.name,-memory", "limit": 2, "offset": 2}
        )
        assert names(r.json()) == ["web1", "cache"]

        # field selection, related fields included; count only
        r = await admin.get(
            "/vms", params={"q": "name=web2", "fields": "name,memory_mb,host.cluster.name"}
        )
        assert r.status_code == 200
        assert r.json()["items"] == [
            {"name": "web2", "memory_mb": 1024, "host": {"cluster": {"name": "c2"}}}
        ]
        r = await admin.get("/vms", params={"q": "state=running", "count": "true"})
        assert r.json()["total"] == 4 and r.json()["items"] == []
        r = await admin.get("/hosts", params={"fields": "name,capacity.cpus_total", "sort": "name"})
        assert [set(i) for i in r.json()["items"]] == [{"name", "capacity"}] * 3

        # mistakes: 400 naming the field, on every list endpoint
        for path, params, field in [
            ("/vms", {"q": "colour=red"}, "colour"),
            ("/vms", {"q": "memory>=lots"}, "memory"),
            ("/vms", {"q": "host.secret=1"}, "host.secret"),
            ("/vms", {"q": "vnc_password=x"}, "vnc_password"),
            ("/vms", {"sort": "-nope"}, "nope"),
            ("/vms", {"fields": "name,nope"}, "nope"),
            ("/hosts", {"q": "token=x"}, "token"),
            ("/users", {"q": "password_hash~*"}, "password_hash"),
            ("/zones", {"q": "name>"}, None),
            ("/clusters", {"colour": "red"}, "colour"),
            ("/offerings", {"q": "cpus=in:"}, None),
            ("/images", {"q": "size>=big"}, "size"),
            ("/operations", {"q": "status=flying"}, "status"),
            ("/projects", {"q": "nope=1"}, "nope"),
            ("/roles", {"sort": "permissions"}, "permissions"),
            ("/projects/pa/members", {"q": "user.password_hash=x"}, "user.password_hash"),
        ]:
            error = refused(await admin.get(path, params=params), 400, "invalid_query")
            if field is not None:
                assert error["context"]["field"] == field, (path, params, error)
            else:
                assert error["message"], error

        # members: related fields of the membership
        r = await admin.get("/projects/pa/members", params={"q": "role=member"})
        assert names(r.json(), "username") == ["alice"]
        r = await admin.get(
            "/projects/pa/members", params={"q": "user.name~a*", "sort": "-username"}
        )
        assert names(r.json(), "username") == ["anna", "alice"]

        # visibility: a query never widens what a caller sees
        async with client_as(stack, "alice") as alice, client_as(stack, "bob") as bob:
            assert _q(await bob.get("/vms", params={"sort": "name"})) == ["other"]
            assert _q(await bob.get("/vms", params={"q": f"project_id={pa}"})) == []
            assert _q(await bob.get("/vms", params={"q": "owner.name=alice"})) == []
            r = await bob.get("/vms", params={"q": "memory>0", "count": "true"})
            assert r.json()["total"] == 1
            assert _q(await alice.get("/vms", params={"sort": "name"})) == [
                "cache",
                "web1",
                "web2",
            ]


@pytest.mark.postgres
async def test_tags(tmp_path: Path, database_url: str | None) -> None:
    async with (
        running_stack(tmp_path, database_url=database_url) as stack,
        api_client(stack) as admin,
    ):
        pa, pb = await make_project(stack, "pa"), await make_project(stack, "pb")
        await make_user(stack, "alice", {pa: "member"})
        await make_user(stack, "anna", {pa: "project-admin"})
        await make_user(stack, "vera", {pa: "viewer"})
        await make_user(stack, "bob", {pb: "member"})
        users = {n: await _user_id(admin, n) for n in ("alice", "anna", "bob")}
        await _seed(stack, {"a": pa, "b": pb}, users)

        async with (
            client_as(stack, "alice") as alice,
            client_as(stack, "vera") as vera,
            client_as(stack, "bob") as bob,
        ):
            done(await alice.post("/vms/web1/tags", json={"tags": ["web", "env=prod"]}))
            done(await alice.post("/vms/web2/tags", json={"tags": ["web"]}))
            done(await alice.post("/vms/web2/tags", json={"tags": ["web"]}))  # idempotent
            vm = (await alice.get("/vms/web1")).json()
            assert vm["tags"] == ["env=prod", "web"] and vm["system_tags"] == []
            assert _q(await alice.get("/vms", params={"tag": "web", "sort": "name"})) == [
                "web1",
                "web2",
            ]
            r = await alice.get("/vms", params={"tag": ["web", "env=prod"]})
            assert _q(r) == ["web1"]
            r = await alice.get("/vms", params={"tag": "web", "q": "memory<2048"})
            assert _q(r) == ["web2"]
            done(await alice.delete("/vms/web1/tags", params={"tag": ["env=prod", "absent"]}))
            assert (await alice.get("/vms/web1")).json()["tags"] == ["web"]

            # bad tags, too many tags: refused and nothing changes
            refused(await alice.post("/vms/web1/tags", json={"tags": ["a b"]}), 422,
                    "invalid_input")  # fmt: skip
            refused(await alice.post("/vms/web1/tags", json={"tags": []}), 422, "invalid_input")
            many = [f"t{i}" for i in range(49)]
            refused(await alice.post("/vms/web1/tags", json={"tags": [*many, "x"]}), 409,
                    "conflict", reason="too_many_tags")  # fmt: skip
            assert (await alice.get("/vms/web1")).json()["tags"] == ["web"]

            # another tenant can neither see nor tag them; a viewer may not tag
            refused(await bob.post("/vms/web1/tags", json={"tags": ["mine"]}), 404, "not_found")
            assert _q(await bob.get("/vms", params={"tag": "web"})) == []
            refused(await vera.post("/vms/web1/tags", json={"tags": ["v"]}), 403, "forbidden")
            # platform resources: platform admins only
            refused(await alice.post("/hosts/h-c1/tags", json={"tags": ["rack1"]}), 403,
                    "forbidden")  # fmt: skip
        done(await admin.post("/hosts/h-c1/tags", json={"tags": ["rack1"]}))
        assert _q(await admin.get("/hosts", params={"tag": "rack1"})) == ["h-c1"]
        done(await admin.post("/projects/pa/tags", json={"tags": ["billing=42"]}))
        assert _q(await admin.get("/projects", params={"tag": "billing=42"})) == ["pa"]

        # system tags: set and read by code, shown read-only, not matched by ?tag=
        svc = stack.server.services
        host_id = (await admin.get("/hosts/h-c1")).json()["id"]
        async with svc.sessionmaker.begin() as s:
            await tagging.add(s, "host", host_id, ["maintenance"], system=True)
        host = (await admin.get("/hosts/h-c1")).json()
        assert host["tags"] == ["rack1"] and host["system_tags"] == ["maintenance"]
        assert _q(await admin.get("/hosts", params={"tag": "maintenance"})) == []
        done(await admin.delete("/hosts/h-c1/tags", params={"tag": "maintenance"}))
        assert (await admin.get("/hosts/h-c1")).json()["system_tags"] == ["maintenance"]
        async with svc.sessionmaker() as s:
            n = await s.scalar(select(func.count()).select_from(TagRow))
        assert n == 5  # web1: web; web2: web; host: rack1 + maintenance; project: billing=42

        # a deleted resource takes its tags along
        zone = done(await admin.post("/zones", json={"name": "zt"}))["target_id"]
        done(await admin.post("/zones/zt/tags", json={"tags": ["short-lived"]}))
        async with svc.sessionmaker.begin() as s:
            await tagging.add(s, "zone", zone, ["sys"], system=True)
        done(await admin.delete("/zones/zt"))
        async with svc.sessionmaker() as s:
            left = await s.scalar(
                select(func.count()).select_from(TagRow).where(TagRow.resource_id == zone)
            )
        assert left == 0
