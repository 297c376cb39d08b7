"""Identity administration over the REST API: users and roles (projects, members and quotas are
in test_admin_projects.py). Errors are checked by their stable codes."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import func, select

from corral.server.db.tables import TokenRow
from tests.integration.identity.admin import STRONG, done, logged_in, names, refused
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack


async def test_user_lifecycle(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as admin:
        project = await make_project(stack, "alpha")

        # a weak password is refused with the problems, before anything is stored
        r = await admin.post("/users", json={"name": "alice", "password": "alice12345"})
        error = refused(r, 422, "invalid_input", reason="weak_password")
        assert "contains_username" in error["context"]["problems"]
        refused(await admin.post("/users", json={"name": "-x", "password": STRONG}),
                422, "invalid_input")  # fmt: skip
        refused(await admin.post("/users", json={"name": "al", "password": STRONG,
                                                 "email": "not-an-address"}),
                422, "invalid_input")  # fmt: skip

        op = done(await admin.post("/users", json={"name": "alice", "password": STRONG,
                                                   "email": "alice@example.org"}))  # fmt: skip
        assert (op["type"], op["target_type"]) == ("user.create", "user")
        alice_id = op["target_id"]
        refused(await admin.post("/users", json={"name": "alice", "password": STRONG}),
                409, "name_taken")  # fmt: skip

        user = (await admin.get("/users/alice")).json()
        assert user["id"] == alice_id and user["email"] == "alice@example.org"
        assert (user["enabled"], user["is_platform_admin"], user["totp_enabled"]) == (
            True,
            False,
            False,
        )
        assert user["memberships"] == []
        assert not {"password", "password_hash", "totp_secret"} & set(user)

        # lists filter and sort like the others; secrets can be neither filtered nor sorted on
        page = (await admin.get("/users", params={"sort": "-name"})).json()
        assert names(page) == ["alice", "admin"] and page["total"] == 2
        r = await admin.get("/users", params={"is_platform_admin": "true"})
        assert names(r.json()) == ["admin"]
        refused(await admin.get("/users", params={"sort": "password_hash"}), 400, "invalid_query")
        refused(await admin.get("/users", params={"password_hash": "x"}), 400, "invalid_query")
        refused(await admin.get("/users", params={"q": "totp_secret=x"}), 400, "invalid_query")

        # memberships show on the user and on their own profile
        done(await admin.post(f"/projects/{project}/members",
                              json={"user": "alice", "role": "member"}))  # fmt: skip
        r = await admin.get("/users", params={"project_id": project})
        assert names(r.json()) == ["alice"]
        async with logged_in(stack, "alice", STRONG) as alice:
            me = (await alice.get("/users/me")).json()
            assert me["memberships"] == [
                {"project_id": project, "project_name": "alpha", "role": "member"}
            ]
            refused(await alice.get("/users"), 403, "forbidden")
            refused(await alice.get(f"/users/{alice_id}"), 403, "forbidden")
            refused(await alice.patch("/users/alice", json={"is_platform_admin": True}),
                    403, "forbidden")  # fmt: skip

            # disabled: refused at the next request; enabled again: the session works again
            done(await admin.patch("/users/alice", json={"enabled": False, "email": ""}))
            refused(await alice.get("/users/me"), 401, "unauthenticated")
            user = (await admin.get("/users/alice")).json()
            assert (user["enabled"], user["email"]) == (False, None)
            done(await admin.patch("/users/alice", json={"enabled": True}))
            assert (await alice.get("/users/me")).status_code == 200

            # an admin reset ends the user's sessions; a generated password is shown once
            r = await admin.post("/users/alice/password", json={"generate": True})
            op = done(r)
            assert op["type"] == "user.password" and len(op["password"]) >= 16
            refused(await alice.get("/users/me"), 401, "unauthenticated")
        async with logged_in(stack, "alice", op["password"]) as alice:
            assert (await alice.get("/users/me")).json()["name"] == "alice"
        r = await admin.post("/users/alice/password", json={"password": "password1"})
        refused(r, 422, "invalid_input", reason="weak_password")
        r = await admin.post("/users/alice/password", json={"password": STRONG, "generate": True})
        refused(r, 422, "invalid_input")
        op = done(await admin.post("/users/alice/password", json={"password": STRONG}))
        assert op["password"] is None

        # nobody can lock themselves out
        me = (await admin.get("/users/me")).json()
        for body in ({"enabled": False}, {"is_platform_admin": False}):
            refused(await admin.patch("/users/admin", json=body),
                    409, "invalid_state", reason="own_account")  # fmt: skip
        refused(await admin.delete(f"/users/{me['id']}"), 409, "invalid_state")

        # delete: memberships and sessions go with the user
        op = done(await admin.delete("/users/alice"))
        assert op["target_id"] == alice_id
        refused(await admin.get("/users/alice"), 404, "not_found")
        async with stack.server.services.sessionmaker() as s:
            left = await s.scalar(select(func.count()).where(TokenRow.user_id == alice_id))
        assert left == 0
        members = (await admin.get(f"/projects/{project}/members")).json()
        assert members["total"] == 0
        refused(await admin.delete("/users/alice"), 404, "not_found")


async def test_a_user_owning_vms_cannot_be_deleted(tmp_path: Path) -> None:
    from bench.common import make_qcow2

    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with running_stack(tmp_path / "s") as stack, api_client(stack) as admin:
        project = await make_project(stack, "alpha")
        await make_user(stack, "bob", {project: "member"})
        async with client_as(stack, "bob") as bob:
            assert (await bob.post("/images", json={"name": "img"})).status_code == 202
            r = await bob.put("/images/img/data", content=qcow.read_bytes())
            assert r.status_code == 202, r.text
        refused(await admin.delete("/users/bob"), 409, "in_use", vms=0, images=1)
        assert (await admin.get("/users/bob")).status_code == 200


async def test_roles(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as admin:
        page = (await admin.get("/roles", params={"builtin": "true", "sort": "name"})).json()
        assert names(page) == ["member", "project-admin", "viewer"]
        viewer = (await admin.get("/roles/viewer")).json()
        assert viewer["builtin"] and "vm:list" in viewer["permissions"]

        # built-in roles are read-only
        refused(await admin.patch("/roles/viewer", json={"permissions": ["vm:*"]}),
                409, "invalid_state", reason="builtin_role")  # fmt: skip
        refused(await admin.delete("/roles/member"), 409, "invalid_state", reason="builtin_role")

        # permissions are validated: unknown ones and platform ones are refused, by name
        r = await admin.post("/roles", json={"name": "ops", "permissions":
                                             ["vm:list", "host:create", "vm:fly", "nothing"]})  # fmt: skip
        refused(r, 422, "invalid_input", invalid=["host:create", "vm:fly", "nothing"])
        refused(await admin.post("/roles", json={"name": "ops", "permissions": []}),
                422, "invalid_input")  # fmt: skip
        refused(await admin.post("/roles", json={"name": "viewer", "permissions": ["vm:list"]}),
                409, "name_taken")  # fmt: skip

        op = done(await admin.post("/roles", json={"name": "lister", "description": "sees VMs",
                                                   "permissions": ["vm:list", "vm:list"]}))  # fmt: skip
        role = (await admin.get(f"/roles/{op['target_id']}")).json()
        assert (role["name"], role["builtin"], role["permissions"]) == (
            "lister",
            False,
            ["vm:list"],
        )

        # a custom role's rights change at once for its holders
        project = await make_project(stack, "alpha")
        await make_user(stack, "carol", {project: "lister"})
        async with client_as(stack, "carol") as carol:
            assert (await carol.get("/vms")).status_code == 200
            refused(await carol.get("/images"), 403, "forbidden")
            done(await admin.patch("/roles/lister", json={"permissions": ["image:list"]}))
            refused(await carol.get("/vms"), 403, "forbidden")
            assert (await carol.get("/images")).status_code == 200
            refused(await carol.post("/roles", json={"name": "x", "permissions": ["vm:list"]}),
                    403, "forbidden")  # fmt: skip

        # a role someone holds cannot be deleted; once nobody does, it can
        refused(await admin.delete("/roles/lister"), 409, "in_use", members=1)
        done(await admin.delete(f"/projects/{project}/members/carol"))
        done(await admin.delete("/roles/lister"))
        refused(await admin.get("/roles/lister"), 404, "not_found")


async def test_every_mutation_is_an_operation_the_caller_can_follow(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as admin:
        op = done(await admin.post("/projects", json={"name": "p"}))
        r = await admin.get(f"/operations/{op['id']}")
        assert r.status_code == 200 and r.json()["type"] == "project.create"
        page = (await admin.get("/operations", params={"type": "project.create"})).json()
        assert [o["id"] for o in page["items"]] == [op["id"]]
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1") as anon:
            refused(await anon.get("/users/me"), 401, "unauthenticated")
