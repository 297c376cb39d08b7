"""Identity administration over the REST API: projects, their members and their quotas, on
SQLite and PostgreSQL. Membership changes change what a user sees at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.common import make_qcow2

from tests.integration.identity.admin import done, names, refused
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack, wait_op


@pytest.mark.postgres
async def test_projects_and_members(tmp_path: Path, database_url: str | None) -> None:
    async with (
        running_stack(tmp_path, database_url=database_url) as stack,
        api_client(stack) as admin,
    ):
        op = done(await admin.post("/projects", json={"name": "alpha", "description": "A"}))
        alpha = op["target_id"]
        done(await admin.post("/projects", json={"name": "beta", "share_resources": True}))
        refused(await admin.post("/projects", json={"name": "alpha"}), 409, "name_taken")
        refused(await admin.post("/projects", json={"name": "bad name"}), 422, "invalid_input")
        assert names((await admin.get("/projects", params={"sort": "name"})).json()) == [
            "alpha",
            "beta",
            "default",
        ]
        r = await admin.get("/projects", params={"share_resources": "true"})
        assert names(r.json()) == ["beta"]
        done(await admin.patch("/projects/alpha", json={"description": "first"}))
        assert (await admin.get(f"/projects/{alpha}")).json()["description"] == "first"

        await make_user(stack, "anna", {alpha: "project-admin"})
        await make_user(stack, "dave")
        await make_user(stack, "vera")
        async with (
            client_as(stack, "anna") as anna,
            client_as(stack, "dave") as dave,
        ):
            # nobody sees projects they are not in (404, not 403: no leak)
            assert names((await dave.get("/projects")).json()) == []
            refused(await dave.get("/projects/alpha"), 404, "not_found")
            refused(await dave.post("/projects", json={"name": "mine"}), 403, "forbidden")
            assert names((await anna.get("/projects")).json()) == ["alpha"]
            refused(await anna.patch("/projects/alpha", json={"description": "x"}),
                    403, "forbidden")  # fmt: skip

            # the project admin manages the members of their project, and only there
            done(
                await anna.post("/projects/alpha/members", json={"user": "dave", "role": "member"})
            )
            r = await anna.post("/projects/alpha/members", json={"user": "dave", "role": "viewer"})
            refused(r, 409, "conflict", reason="already_member")
            refused(await anna.post("/projects/beta/members", json={"user": "vera",
                                                                     "role": "member"}),
                    404, "not_found")  # fmt: skip
            r = await anna.post(
                "/projects/alpha/members", json={"user": "nobody", "role": "member"}
            )
            refused(r, 404, "not_found")
            page = (await anna.get("/projects/alpha/members", params={"sort": "username"})).json()
            assert [(m["username"], m["role"]) for m in page["items"]] == [
                ("anna", "project-admin"),
                ("dave", "member"),
            ]
            r = await anna.get("/projects/alpha/members", params={"role": "member"})
            assert names(r.json(), "username") == ["dave"]
            refused(await anna.get("/projects/alpha/members", params={"sort": "password"}),
                    400, "invalid_query")  # fmt: skip

            # ... which changes what the member sees, at once
            assert names((await dave.get("/projects")).json()) == ["alpha"]
            assert (await dave.get("/vms")).status_code == 200
            me = (await dave.get("/users/me")).json()
            assert [(m["project_name"], m["role"]) for m in me["memberships"]] == [
                ("alpha", "member")
            ]
            # a member may list the members, not change them
            assert (await dave.get("/projects/alpha/members")).json()["total"] == 2
            r = await dave.post("/projects/alpha/members", json={"user": "vera", "role": "viewer"})
            refused(r, 403, "forbidden")

            done(await anna.patch("/projects/alpha/members/dave", json={"role": "viewer"}))
            refused(await dave.post("/vms", json={"name": "v", "image": "i", "cpus": 1,
                                                  "memory_mb": 64}), 403, "forbidden")  # fmt: skip

            # no escalation: a project admin cannot give a role that grants more than theirs
            done(await admin.post("/roles", json={"name": "owner", "permissions": ["*"]}))
            r = await anna.patch("/projects/alpha/members/dave", json={"role": "owner"})
            refused(r, 403, "forbidden", reason="role_exceeds_yours")
            done(
                await admin.post("/projects/alpha/members", json={"user": "vera", "role": "owner"})
            )
            refused(await anna.delete("/projects/alpha/members/vera"), 403, "forbidden")

            done(await anna.delete(f"/projects/{alpha}/members/dave"))
            refused(await anna.delete("/projects/alpha/members/dave"), 404, "not_found")
            assert names((await dave.get("/projects")).json()) == []
            refused(await dave.get("/vms"), 403, "forbidden")

        # a project with resources cannot be deleted; an empty one can, with its memberships
        qcow = make_qcow2(tmp_path / "tiny.qcow2")
        scoped = {"X-Corral-Project": "alpha"}
        assert (
            await admin.post("/images", json={"name": "img"}, headers=scoped)
        ).status_code == 202
        r = await admin.put("/images/img/data", content=qcow.read_bytes(), headers=scoped)
        assert r.status_code == 202, r.text
        refused(await admin.delete("/projects/alpha"), 409, "in_use", vms=0, images=1)
        done(await admin.delete("/images/img", headers=scoped))
        op = done(await admin.delete("/projects/alpha"))
        assert op["target_id"] == alpha
        refused(await admin.get("/projects/alpha"), 404, "not_found")
        assert (await admin.get("/users/anna")).json()["memberships"] == []


@pytest.mark.postgres
async def test_quotas(tmp_path: Path, database_url: str | None) -> None:
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with (
        running_stack(tmp_path / "s", database_url=database_url) as stack,
        api_client(stack) as admin,
    ):
        project = await make_project(stack, "alpha")
        await make_user(stack, "anna", {project: "project-admin"})
        await make_user(stack, "bob", {project: "member"})
        await make_user(stack, "dave")
        quota = (await admin.get("/projects/alpha/quota")).json()
        assert quota["project_id"] == project
        assert quota["vms"] == {"limit": None, "used": 0}
        assert set(quota) == {"project_id", "vms", "vcpus", "memory_mb", "volume_gb",
                              "snapshots", "ips", "images"}  # fmt: skip

        op = done(await admin.put("/projects/alpha/quota", json={"vms": 2, "vcpus": 8}))
        assert (op["type"], op["target_id"]) == ("quota.update", project)
        async with client_as(stack, "bob") as bob:
            assert (await bob.post("/images", json={"name": "img"})).status_code == 202
            assert (await bob.put("/images/img/data", content=qcow.read_bytes())).status_code == 202
            vm = {"name": "v1", "image": "img", "cpus": 2, "memory_mb": 64, "disk_gb": 1}
            r = await bob.post("/vms", json=vm)
            assert r.status_code == 202, r.text
            assert (await wait_op(bob, r.json()))["status"] == "succeeded"
            quota = (await bob.get(f"/projects/{project}/quota")).json()
            assert quota["vms"] == {"limit": 2, "used": 1}
            assert quota["vcpus"] == {"limit": 8, "used": 2}
            assert quota["images"] == {"limit": None, "used": 1}
            refused(await bob.put("/projects/alpha/quota", json={"vms": 9}), 403, "forbidden")
        async with client_as(stack, "anna") as anna, client_as(stack, "dave") as dave:
            assert (await anna.get("/projects/alpha/quota")).status_code == 200
            refused(await anna.put("/projects/alpha/quota", json={"vms": 9}), 403, "forbidden")
            refused(await dave.get("/projects/alpha/quota"), 403, "forbidden")

        # a limit below the usage needs force; null is unlimited; unnamed limits are kept
        r = await admin.put("/projects/alpha/quota", json={"vms": 0, "vcpus": 1, "images": 5})
        error = refused(r, 409, "conflict", reason="quota_below_usage")
        assert error["context"]["below"] == {"vms": {"limit": 0, "used": 1},
                                             "vcpus": {"limit": 1, "used": 2}}  # fmt: skip
        assert (await admin.get("/projects/alpha/quota")).json()["images"]["limit"] is None
        done(await admin.put("/projects/alpha/quota", json={"vms": 0, "force": True}))
        quota = (await admin.get("/projects/alpha/quota")).json()
        assert (quota["vms"], quota["vcpus"]["limit"]) == ({"limit": 0, "used": 1}, 8)
        async with client_as(stack, "bob") as bob:
            r = await bob.post("/vms", json={**vm, "name": "v2"})
            refused(r, 409, "quota_exceeded", resource="vms")
        done(await admin.put("/projects/alpha/quota", json={"vms": None}))
        assert (await admin.get("/projects/alpha/quota")).json()["vms"]["limit"] is None
        refused(await admin.put("/projects/alpha/quota", json={"vms": -1}), 422, "invalid_input")
        refused(await admin.put("/projects/alpha/quota", json={"cpus": 1}), 422, "invalid_input")
        refused(await admin.put("/projects/nope/quota", json={"vms": 1}), 404, "not_found")
