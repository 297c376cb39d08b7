"""Tenants never see or touch each other's VMs, images and operations; inside a project, members
see their own and shared resources and project admins see everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from bench.common import make_qcow2

from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import running_stack, wait_op


async def _image(c: httpx.AsyncClient, name: str, path: Path) -> None:
    r = await c.post("/images", json={"name": name})
    assert r.status_code == 202, r.text
    r = await c.put(f"/images/{name}/data", content=path.read_bytes())
    assert r.status_code == 202, r.text


async def _vm(c: httpx.AsyncClient, name: str, image: str) -> dict[str, Any]:
    r = await c.post(
        "/vms", json={"name": name, "image": image, "cpus": 1, "memory_mb": 64, "disk_gb": 1}
    )
    assert r.status_code == 202, r.text
    op = await wait_op(c, r.json())
    assert op["status"] == "succeeded", op
    vm: dict[str, Any] = (await c.get(f"/vms/{op['target_id']}")).json()
    return vm


def _names(page: dict[str, Any]) -> set[str]:
    return {item["name"] for item in page["items"]}


async def test_projects_are_isolated(tmp_path: Path) -> None:
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with running_stack(tmp_path / "stack", sim_hosts=2) as stack:
        pa, pb = await make_project(stack, "alpha"), await make_project(stack, "beta")
        await make_user(stack, "alice", {pa: "member"})
        await make_user(stack, "anna", {pa: "project-admin"})
        await make_user(stack, "vera", {pa: "viewer"})
        await make_user(stack, "bob", {pb: "member"})
        async with (
            client_as(stack, "alice") as alice,
            client_as(stack, "anna") as anna,
            client_as(stack, "vera") as vera,
            client_as(stack, "bob") as bob,
        ):
            await _image(alice, "img-a", qcow)
            await _image(bob, "img-b", qcow)
            vm_a = await _vm(alice, "web", "img-a")
            vm_b = await _vm(bob, "web", "img-b")  # same name, other project: allowed
            assert vm_a["id"] != vm_b["id"]

            # lists: each tenant sees only their own
            assert _names((await alice.get("/vms")).json()) == {"web"}
            assert (await bob.get("/vms")).json()["items"][0]["id"] == vm_b["id"]
            assert _names((await bob.get("/images")).json()) == {"img-b"}

            # bob can neither read nor change alice's VM, image or operations: 404, not 403
            for method, path in [
                ("GET", f"/vms/{vm_a['id']}"),
                ("POST", f"/vms/{vm_a['id']}/stop"),
                ("POST", f"/vms/{vm_a['id']}/resize"),
                ("DELETE", f"/vms/{vm_a['id']}"),
                ("GET", f"/vms/{vm_a['id']}/nics"),
                ("GET", f"/vms/{vm_a['id']}/nics/0"),
                ("POST", f"/vms/{vm_a['id']}/nics"),
                ("PATCH", f"/vms/{vm_a['id']}/nics/0"),
                ("DELETE", f"/vms/{vm_a['id']}/nics/0"),
                ("GET", "/images/img-a"),
                ("DELETE", "/images/img-a"),
            ]:
                body: dict[str, Any] | None = {"cpus": 2} if "resize" in path else None
                if path.endswith("/nics") and method == "POST":
                    body = {"port_group": "pg"}
                elif "/nics/" in path and method == "PATCH":
                    body = {"spoof_check": False}
                r = await bob.request(method, path, json=body)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "not_found"
            r = await bob.post(
                "/vms", json={"name": "x", "image": "img-a", "cpus": 1, "memory_mb": 64}
            )
            assert r.status_code == 404, r.text  # alice's image is invisible to bob
            ops_b = (await bob.get("/operations", params={"limit": 100})).json()["items"]
            ops_a = (await alice.get("/operations", params={"limit": 100})).json()["items"]
            assert ops_a and ops_b and not {o["id"] for o in ops_a} & {o["id"] for o in ops_b}
            r = await bob.get(f"/operations/{ops_a[0]['id']}")
            assert r.status_code == 404

            # inside alpha: the project admin sees alice's VM, the viewer only once shared
            assert _names((await anna.get("/vms")).json()) == {"web"}
            assert _names((await vera.get("/vms")).json()) == set()
            async with stack.server.services.sessionmaker.begin() as s:
                from corral.server.db.tables import VmRow

                row = await s.get(VmRow, vm_a["id"])
                assert row is not None
                row.shared = True
            assert _names((await vera.get("/vms")).json()) == {"web"}
            r = await vera.post(f"/vms/{vm_a['id']}/stop")
            assert r.status_code == 403, r.text  # sees it, may not act on it
            assert (await anna.post(f"/vms/{vm_a['id']}/stop")).status_code == 202

            # the platform admin sees both tenants' VMs
            r = await stack_admin_get(stack, "/vms")
            assert {i["id"] for i in r["items"]} >= {vm_a["id"], vm_b["id"]}


async def stack_admin_get(stack: Any, path: str) -> dict[str, Any]:
    from tests.support.stack import api_client

    async with api_client(stack) as admin:
        r = await admin.get(path)
        assert r.status_code == 200, r.text
        page: dict[str, Any] = r.json()
        return page
