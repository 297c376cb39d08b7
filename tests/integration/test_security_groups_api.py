"""Security groups through REST (the management plane): CRUD, rule priorities kept 0..n-1 under
inserts, moves, deletes and 20 concurrent inserts (SQLite and PostgreSQL), rule validation, remote
groups, the delete rule, the reference's web/app/db/ops example exported and imported, all-or-
nothing imports listing the offending rules, visibility, ETags and tags."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from corral.api.security_groups import MAX_RULES
from corral.server.app import ServerHandle, start
from corral.server.db.tables import MembershipRow, ProjectRow, QuotaRow, RoleRow, UserRow
from corral.server.settings import ServerSettings
from tests.integration.identity.admin import done, names, refused

ADMIN_PW = "pw-admin-1"
USER_PW = "correct horse battery staple 42"
_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)

SG = "/security-groups"


async def _start(tmp_path: Path, database_url: str | None) -> ServerHandle:
    settings = ServerSettings(
        data_dir=tmp_path, port=0, tls=False, admin_password=ADMIN_PW, database_url=database_url
    )
    return await start(settings, listen=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A server on SQLite."""
    handle = await _start(tmp_path, None)
    try:
        yield handle
    finally:
        await handle.stop()


@pytest.fixture
async def any_server(tmp_path: Path, database_url: str | None) -> AsyncIterator[ServerHandle]:
    """A server on SQLite, then on PostgreSQL."""
    handle = await _start(tmp_path, database_url)
    try:
        yield handle
    finally:
        await handle.stop()


@asynccontextmanager
async def _client(
    server: ServerHandle, name: str, password: str
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:
        r = await c.post("/auth/login", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


async def _project(server: ServerHandle, name: str) -> str:
    async with server.services.sessionmaker.begin() as s:
        row = ProjectRow(name=name)
        s.add(row)
        await s.flush()
        s.add(QuotaRow(project_id=row.id))
        return row.id


async def _user(server: ServerHandle, name: str, memberships: dict[str, str]) -> None:
    """A user with ``memberships`` {project id: role name}."""
    async with server.services.sessionmaker.begin() as s:
        user = UserRow(name=name, password_hash=_hasher.hash(USER_PW))
        s.add(user)
        await s.flush()
        for project_id, role in memberships.items():
            role_id = await s.scalar(select(RoleRow.id).where(RoleRow.name == role))
            s.add(MembershipRow(user_id=user.id, project_id=project_id, role_id=role_id))
    server.services.callers.clear()


def rule(port: int | None = None, **extra: Any) -> dict[str, Any]:
    """An ingress rule (tcp ``port`` when given)."""
    body: dict[str, Any] = {"direction": "ingress", **extra}
    if port is not None:
        body |= {"protocol": "tcp", "port_min": port}
    return body


async def _group(c: httpx.AsyncClient, ref: str) -> dict[str, Any]:
    """The group, its rules checked to hold the priorities 0..n-1 in order."""
    r = await c.get(f"{SG}/{ref}")
    assert r.status_code == 200, r.text
    group: dict[str, Any] = r.json()
    assert [x["priority"] for x in group["rules"]] == list(range(len(group["rules"])))
    assert group["rule_count"] == len(group["rules"])
    return group


async def _ports(c: httpx.AsyncClient, ref: str) -> list[int | None]:
    return [x["port_min"] for x in (await _group(c, ref))["rules"]]


@pytest.mark.postgres
async def test_crud_and_priorities_stay_consecutive(any_server: ServerHandle) -> None:
    async with _client(any_server, "admin", ADMIN_PW) as c:
        op = done(await c.post(SG, json={"name": "web", "description": "front"}))
        assert (op["type"], op["target_type"]) == ("security_group.create", "security_group")
        g = await _group(c, "web")
        assert g["id"] == op["target_id"] and g["project_id"] == op["project_id"]
        assert (g["intra_group"], g["rules"], g["revision"], g["description"]) == (
            True, [], 0, "front")  # fmt: skip

        for port in (10, 20, 30):  # appended
            done(await c.post(f"{SG}/web/rules", json=rule(port)))
        assert await _ports(c, "web") == [10, 20, 30]
        op = done(await c.post(f"{SG}/web/rules", json=rule(5, priority=0)))
        assert (op["type"], op["target_type"]) == ("security_group.rule.add", "security_group_rule")
        done(await c.post(f"{SG}/web/rules", json=rule(15, priority=2)))
        done(await c.post(f"{SG}/web/rules", json=rule(99, priority=99)))  # past the end: last
        done(await c.post(f"{SG}/web/rules", json=rule(25, priority=5)))  # just before the last
        g = await _group(c, "web")
        assert [x["port_min"] for x in g["rules"]] == [5, 10, 15, 20, 30, 25, 99]
        assert g["rules"][0]["id"] == op["target_id"] and g["revision"] == 7
        assert g["rules"][0]["port_max"] == 5  # port_min alone: that one port
        ids = {x["port_min"]: x["id"] for x in g["rules"]}

        # moves: down, up, to the end (past it), in place; action and description change
        done(await c.patch(f"{SG}/web/rules/{ids[5]}", json={"priority": 3}))
        assert await _ports(c, "web") == [10, 15, 20, 5, 30, 25, 99]
        done(await c.patch(f"{SG}/web/rules/{ids[25]}", json={"priority": 0}))
        assert await _ports(c, "web") == [25, 10, 15, 20, 5, 30, 99]
        done(await c.patch(f"{SG}/web/rules/{ids[10]}", json={"priority": 50}))
        assert await _ports(c, "web") == [25, 15, 20, 5, 30, 99, 10]
        body = {"priority": 2, "action": "deny", "description": "no"}
        op = done(await c.patch(f"{SG}/web/rules/{ids[20]}", json=body))
        assert op["type"] == "security_group.rule.update" and op["target_id"] == ids[20]
        g = await _group(c, "web")
        assert [x["port_min"] for x in g["rules"]] == [25, 15, 20, 5, 30, 99, 10]
        assert (g["rules"][2]["action"], g["rules"][2]["description"]) == ("deny", "no")

        # deletes close the gap: first, middle, last
        for port, left in ((25, [15, 20, 5, 30, 99, 10]), (5, [15, 20, 30, 99, 10]),
                           (10, [15, 20, 30, 99])):  # fmt: skip
            op = done(await c.delete(f"{SG}/web/rules/{ids[port]}"))
            assert op["type"] == "security_group.rule.delete"
            assert await _ports(c, "web") == left
        refused(await c.delete(f"{SG}/web/rules/{ids[25]}"), 404, "not_found")
        refused(await c.patch(f"{SG}/web/rules/nope", json={"priority": 0}), 404, "not_found")

        # the group: rename (names unique per project), the built-in rule off, query, list
        done(await c.post(SG, json={"name": "other"}))
        refused(await c.patch(f"{SG}/web", json={"name": "other"}), 409, "name_taken")
        refused(await c.post(SG, json={"name": "other"}), 409, "name_taken")
        before = (await _group(c, "web"))["revision"]
        done(await c.patch(f"{SG}/web", json={"name": "www", "intra_group": False}))
        g = await _group(c, "www")
        assert (g["intra_group"], g["revision"]) == (False, before + 1)
        page = (await c.get(SG, params={"sort": "name"})).json()
        assert names(page) == ["other", "www"]
        assert [(x["rule_count"], x["rules"]) for x in page["items"]] == [(0, []), (4, [])]
        page = (await c.get(SG, params={"q": "intra_group=false"})).json()
        assert names(page) == ["www"]
        refused(await c.get(SG, params={"q": "rules=1"}), 400, "invalid_query")

        op = done(await c.delete(f"{SG}/www"))
        assert op["type"] == "security_group.delete"
        refused(await c.get(f"{SG}/www"), 404, "not_found")
        refused(await c.post(f"{SG}/www/rules", json=rule(1)), 404, "not_found")


@pytest.mark.postgres
async def test_concurrent_inserts_at_priority_0(any_server: ServerHandle) -> None:
    """20 rules inserted at once at the top: each request serializes on the group's row, so
    the priorities end up 0..19 with every rule there."""
    async with _client(any_server, "admin", ADMIN_PW) as c:
        done(await c.post(SG, json={"name": "busy"}))
        answers = await asyncio.gather(
            *(c.post(f"{SG}/busy/rules", json=rule(1000 + i, priority=0)) for i in range(20))
        )
        ids = {done(r)["target_id"] for r in answers}
        g = await _group(c, "busy")
        assert [x["priority"] for x in g["rules"]] == list(range(20))
        assert {x["id"] for x in g["rules"]} == ids and len(ids) == 20
        assert sorted(x["port_min"] for x in g["rules"]) == [1000 + i for i in range(20)]
        assert g["revision"] == 20

        # and moves and deletes racing inserts keep them consecutive too
        rules = g["rules"]
        calls = [c.patch(f"{SG}/busy/rules/{x['id']}", json={"priority": 19 - i})
                 for i, x in enumerate(rules[:5])]  # fmt: skip
        calls += [c.delete(f"{SG}/busy/rules/{x['id']}") for x in rules[5:10]]
        calls += [c.post(f"{SG}/busy/rules", json=rule(2000 + i, priority=3)) for i in range(5)]
        for r in await asyncio.gather(*calls):
            done(r)
        g = await _group(c, "busy")
        assert len(g["rules"]) == 20 and g["revision"] == 35


async def test_rule_validation_changes_nothing(server: ServerHandle) -> None:
    async with _client(server, "admin", ADMIN_PW) as c:
        done(await c.post(SG, json={"name": "g", "rules": [rule(22)]}))
        before = await _group(c, "g")
        bad: list[tuple[dict[str, Any], str]] = [
            (rule(protocol="icmp", port_min=1), "ports only go with tcp or udp"),
            (rule(protocol="any", port_min=1), "ports only go with tcp or udp"),
            (rule(protocol="icmp", ethertype="ipv6"), "icmp is IPv4"),
            (rule(protocol="icmpv6"), "icmpv6 is IPv6"),
            (rule(remote_cidr="fd00::/64"), "address family"),
            (rule(remote_cidr="10.0.0.0/8", ethertype="ipv6"), "address family"),
            (rule(protocol="tcp", port_min=90, port_max=80), "port_max is below port_min"),
            (rule(protocol="tcp", port_max=80), "port_max needs port_min"),
            (rule(protocol="tcp", port_min=70000), "less than or equal to 65535"),
            (rule(remote_cidr="10.0.0.0/8", remote_group="g"), "not both"),
            (rule(remote_cidr="10.0.0.1/8"), "host bits"),
            ({"direction": "sideways"}, "direction"),
            (rule(color="red"), "color"),
        ]
        for body, why in bad:
            error = refused(await c.post(f"{SG}/g/rules", json=body), 422, "invalid_input")
            assert why in error["message"], (body, error)
        # the same rule twice; an unknown remote group
        error = refused(await c.post(f"{SG}/g/rules", json=rule(22)), 422, "invalid_input")
        assert "already" in error["message"] and error["context"]["priority"] == 0
        refused(await c.post(f"{SG}/g/rules", json=rule(23, remote_group="nope")), 404, "not_found")
        assert await _group(c, "g") == before  # nothing changed, not even the revision

        # a group's first rules are checked the same way, each offending one listed
        body = {"name": "h", "rules": [rule(1), rule(protocol="icmp", port_min=1), rule(2),
                                        rule(1), rule(3, remote_group="nope"),
                                        rule(protocol="tcp", port_min=9, port_max=8)]}  # fmt: skip
        error = refused(await c.post(SG, json=body), 422, "invalid_input")
        assert [x["index"] for x in error["context"]["rules"]] == [1, 5]  # the shape first
        body["rules"] = [r for i, r in enumerate(body["rules"]) if i not in (1, 5)]
        error = refused(await c.post(SG, json=body), 422, "invalid_input")
        assert error["context"]["rules"] == [
            {"index": 2, "error": "same rule as rule 0"},
            {"index": 3, "error": "remote group 'nope' not found"},
        ]
        refused(await c.get(f"{SG}/h"), 404, "not_found")
        # a new group may name itself as a remote group
        body = {"name": "h", "rules": [rule(1, remote_group="h"), rule(2, remote_group="g")]}
        done(await c.post(SG, json=body))
        h = await _group(c, "h")
        assert [(x["remote_group"], x["remote_group_id"]) for x in h["rules"]] == [
            ("h", h["id"]), ("g", before["id"])]  # fmt: skip

        # a full group takes no more rules
        done(
            await c.post(f"{SG}/g/import", json={"rules": [rule(i + 1) for i in range(MAX_RULES)]})
        )
        error = refused(await c.post(f"{SG}/g/rules", json=rule(1, action="deny")), 409,
                        "invalid_state")  # fmt: skip
        assert error["context"]["reason"] == "too_many_rules"
        done(await c.patch(f"{SG}/g", json={"description": "still changeable"}))


async def test_remote_groups_and_the_delete_rule(server: ServerHandle) -> None:
    pa, pb = await _project(server, "pa"), await _project(server, "pb")
    await _user(server, "both", {pa: "member", pb: "member"})
    async with _client(server, "both", USER_PW) as u:
        a = {"X-Corral-Project": "pa"}
        b = {"X-Corral-Project": "pb"}
        refused(await u.post(SG, json={"name": "x"}), 422, "invalid_input")  # which project?
        done(await u.post(SG, json={"name": "app"}, headers=a))
        done(await u.post(SG, json={"name": "db"}, headers=a))
        done(await u.post(SG, json={"name": "app"}, headers=b))  # names are per project
        done(await u.post(SG, json={"name": "b-only"}, headers=b))
        app_a = (await u.get(f"{SG}/app", headers=a)).json()
        refused(await u.get(f"{SG}/app"), 422, "invalid_input")  # two of them: say which

        # a remote group of another project: refused, with either reference (scoped to the
        # rule's project, the other project's groups are not even seen)
        b_only = (await u.get(f"{SG}/b-only")).json()
        for ref in ("b-only", b_only["id"]):
            r = await u.post(f"{SG}/db/rules", json=rule(3306, remote_group=ref))
            error = refused(r, 422, "invalid_input", remote_group=ref)
            assert "another project" in error["message"]
            r = await u.post(f"{SG}/db/rules", json=rule(3306, remote_group=ref), headers=a)
            refused(r, 404, "not_found")
        # the same name in both projects: the rule's own project's group
        done(await u.post(f"{SG}/db/rules", json=rule(3306, remote_group="app"), headers=a))
        done(await u.post(f"{SG}/db/rules", json=rule(22, remote_group="db"), headers=a))  # itself
        db = await _group(u, (await u.get(f"{SG}/db", headers=a)).json()["id"])
        assert [(x["remote_group"], x["remote_group_id"]) for x in db["rules"]] == [
            ("app", app_a["id"]), ("db", db["id"])]  # fmt: skip

        # app is named by db's rule: not deletable until that rule goes
        error = refused(await u.delete(f"{SG}/app", headers=a), 409, "in_use", groups=["db"])
        assert "db" in error["message"]
        done(await u.delete(f"{SG}/app", headers=b))  # B's app is another group
        done(await u.delete(f"{SG}/db/rules/{db['rules'][0]['id']}", headers=a))
        done(await u.delete(f"{SG}/app", headers=a))
        done(await u.delete(f"{SG}/db", headers=a))  # naming itself is no obstacle
        assert names((await u.get(SG)).json()) == ["b-only"]


def _specs(group: dict[str, Any]) -> list[dict[str, Any]]:
    keep = ("direction", "ethertype", "protocol", "port_min", "port_max", "remote_cidr",
            "remote_group", "action", "description")  # fmt: skip
    return [{k: x[k] for k in keep} for x in group["rules"]]


async def test_web_app_db_ops_example_export_import(server: ServerHandle) -> None:
    """The reference's example: web takes 80/443 from anywhere, app 8080 from web, db 3306 from
    app; ops (on every VM, its members not talking to each other) lets SSH in from the
    operators' network. Exported, then imported into fresh groups (replace and append)."""
    async with _client(server, "admin", ADMIN_PW) as c:
        for name in ("web", "app", "db"):
            done(await c.post(SG, json={"name": name}))
        done(await c.post(SG, json={"name": "ops", "intra_group": False}))
        for port in (80, 443):
            body = rule(port, remote_cidr="0.0.0.0/0", description=f"{port} from anywhere")
            done(await c.post(f"{SG}/web/rules", json=body))
            done(await c.post(f"{SG}/web/rules", json=rule(port, ethertype="ipv6")))
        done(await c.post(f"{SG}/app/rules", json=rule(8080, remote_group="web")))
        done(await c.post(f"{SG}/db/rules", json=rule(3306, remote_group="app")))
        done(await c.post(f"{SG}/ops/rules", json=rule(22, remote_cidr="10.99.0.0/24")))
        done(
            await c.post(f"{SG}/ops/rules", json=rule(protocol="icmp", remote_cidr="10.99.0.0/24"))
        )
        refused(await c.delete(f"{SG}/app"), 409, "in_use", groups=["db"])
        refused(await c.delete(f"{SG}/web"), 409, "in_use", groups=["app"])

        exports = {n: (await c.get(f"{SG}/{n}/export")).json() for n in ("web", "app", "db", "ops")}
        assert exports["db"] == {
            "version": 1,
            "group": "db",
            "intra_group": True,
            "rules": [{"direction": "ingress", "ethertype": "ipv4", "protocol": "tcp",
                       "port_min": 3306, "port_max": 3306, "remote_cidr": None,
                       "remote_group": "app", "action": "allow", "description": ""}],
        }  # fmt: skip
        assert [x["port_min"] for x in exports["web"]["rules"]] == [80, 80, 443, 443]
        assert exports["ops"]["intra_group"] is False

        # an export is an import body as is: replace copies the rules and intra_group
        for name in ("web", "app", "db", "ops"):
            done(await c.post(SG, json={"name": f"{name}2", "intra_group": name != "ops"}))
        for name in ("web", "app", "db"):
            op = done(await c.post(f"{SG}/{name}2/import", json=exports[name]))
            assert op["type"] == "security_group.import"
            assert _specs(await _group(c, f"{name}2")) == exports[name]["rules"]
        done(await c.post(f"{SG}/ops2/import", json=exports["ops"] | {"intra_group": True}))
        ops2 = await _group(c, "ops2")
        assert _specs(ops2) == exports["ops"]["rules"] and ops2["intra_group"] is True

        # append: the ops rules after app2's own, intra_group kept; replace again: only ops'
        body = {"rules": exports["ops"]["rules"], "mode": "append"}
        done(await c.post(f"{SG}/app2/import", json=body))
        app2 = await _group(c, "app2")
        assert _specs(app2) == exports["app"]["rules"] + exports["ops"]["rules"]
        assert app2["intra_group"] is True
        done(await c.post(f"{SG}/app2/import", json={"rules": exports["ops"]["rules"]}))
        assert _specs(await _group(c, "app2")) == exports["ops"]["rules"]
        # db2 names app too now; an empty replace clears db2's rules
        refused(await c.delete(f"{SG}/app"), 409, "in_use", groups=["db", "db2"])
        done(await c.post(f"{SG}/db2/import", json={"rules": []}))
        assert (await _group(c, "db2"))["rules"] == []


async def test_bad_imports_change_nothing_and_list_every_offending_rule(
    server: ServerHandle,
) -> None:
    pb = await _project(server, "elsewhere")
    async with _client(server, "admin", ADMIN_PW) as c:
        done(await c.post(SG, json={"name": "far"}, headers={"X-Corral-Project": pb}))
        done(await c.post(SG, json={"name": "t", "rules": [rule(1), rule(2)]}))
        done(await c.post(SG, json={"name": "peer"}))
        before = await _group(c, "t")

        # the shape (pydantic): every invalid rule listed by index
        body = {"rules": [rule(10), rule(protocol="icmp", port_min=1), rule(11),
                          rule(protocol="tcp", port_min=9, port_max=8),
                          {"direction": "ingress", "colour": "red"}]}  # fmt: skip
        error = refused(await c.post(f"{SG}/t/import", json=body), 422, "invalid_input")
        assert error["context"]["rules"] == [
            {"index": 1, "error": "ports only go with tcp or udp"},
            {"index": 3, "error": "port_max is below port_min"},
            {"index": 4, "error": "colour: Extra inputs are not permitted"},
        ]
        assert [e["loc"] for e in error["context"]["errors"]] == [
            ["body", "rules", 1], ["body", "rules", 3], ["body", "rules", 4, "colour"]]  # fmt: skip

        # then the checks against the database: remote groups, duplicates
        body = {"rules": [rule(10, remote_group="peer"), rule(11, remote_group="nope"), rule(12),
                          rule(10, remote_group="peer"), rule(13, remote_group="far"),
                          rule(14, remote_group="t")]}  # fmt: skip
        for mode in ("replace", "append"):
            r = await c.post(f"{SG}/t/import", json=body | {"mode": mode})
            error = refused(r, 422, "invalid_input")
            assert [(x["index"], x["error"]) for x in error["context"]["rules"]] == [
                (1, "remote group 'nope' not found"),
                (3, "same rule as rule 0"),
                (4, "remote group 'far' is in another project: a rule may only name a group"
                    " of its own project"),
            ]  # fmt: skip
            assert error["message"].startswith("3 of 6 rule(s) invalid, nothing changed")
        # appending what the group has: duplicates of its rules
        r = await c.post(f"{SG}/t/import", json={"rules": [rule(2), rule(3)], "mode": "append"})
        error = refused(r, 422, "invalid_input")
        assert error["context"]["rules"] == [
            {"index": 0, "error": "the group has this rule already (priority 1)"}
        ]
        # more than a group may hold
        many = [rule(100 + i) for i in range(MAX_RULES - 1)]
        r = await c.post(f"{SG}/t/import", json={"rules": many, "mode": "append"})
        error = refused(r, 422, "invalid_input")
        assert [x["index"] for x in error["context"]["rules"]] == [MAX_RULES - 2]
        r = await c.post(f"{SG}/t/import", json={"rules": [*many, rule(9), rule(8)]})
        refused(r, 422, "invalid_input")  # more than MAX_RULES in one import
        r = await c.post(f"{SG}/t/import", json={"rules": [], "mode": "merge"})
        refused(r, 422, "invalid_input")
        assert await _group(c, "t") == before


async def test_visibility_permissions_etag_and_tags(server: ServerHandle) -> None:
    p, q = await _project(server, "team"), await _project(server, "rivals")
    await _user(server, "m1", {p: "member"})
    await _user(server, "m2", {p: "member"})
    await _user(server, "viewer", {p: "viewer"})
    await _user(server, "lead", {p: "project-admin"})
    await _user(server, "rival", {q: "member"})
    async with (
        _client(server, "m1", USER_PW) as m1,
        _client(server, "m2", USER_PW) as m2,
        _client(server, "viewer", USER_PW) as viewer,
        _client(server, "lead", USER_PW) as lead,
        _client(server, "rival", USER_PW) as rival,
    ):
        done(await m1.post(SG, json={"name": "mine", "rules": [rule(22)]}))
        g = await _group(m1, "mine")
        assert g["project_id"] == p
        rid = g["rules"][0]["id"]
        # other members (not shared) and other projects: not found, whatever the call
        for other in (m2, rival):
            assert (await other.get(SG)).json()["total"] == 0
            for r in (
                await other.get(f"{SG}/mine"),
                await other.get(f"{SG}/{g['id']}/export"),
                await other.patch(f"{SG}/mine", json={"description": "x"}),
                await other.delete(f"{SG}/{g['id']}"),
                await other.post(f"{SG}/mine/rules", json=rule(80)),
                await other.patch(f"{SG}/mine/rules/{rid}", json={"priority": 0}),
                await other.delete(f"{SG}/mine/rules/{rid}"),
                await other.post(f"{SG}/mine/import", json={"rules": []}),
                await other.post(f"{SG}/mine/tags", json={"tags": ["x"]}),
            ):
                refused(r, 404, "not_found")
        # nor may they name it as a remote group
        done(await m2.post(SG, json={"name": "theirs"}))
        r = await m2.post(f"{SG}/theirs/rules", json=rule(1, remote_group="mine"))
        refused(r, 404, "not_found")
        r = await rival.post(SG, json={"name": "r", "rules": [rule(1, remote_group=g["id"])]})
        refused(r, 422, "invalid_input")
        # the project admin sees every group of the project; a viewer may not change any
        assert names((await lead.get(SG, params={"sort": "name"})).json()) == ["mine", "theirs"]
        refused(await viewer.post(SG, json={"name": "v"}), 403, "forbidden")
        refused(await viewer.post(f"{SG}/mine/rules", json=rule(80)), 403, "forbidden")
        refused(await rival.get(SG, headers={"X-Corral-Project": "team"}), 404, "not_found")

        # ETag / If-Match: on the group and on rule changes (which change the group)
        r = await m1.get(f"{SG}/mine")
        etag = r.headers["ETag"]
        assert etag == r.json()["etag"]
        done(await m1.post(f"{SG}/mine/rules", json=rule(80), headers={"If-Match": etag}))
        for stale in (
            await m1.post(f"{SG}/mine/rules", json=rule(81), headers={"If-Match": etag}),
            await m1.patch(f"{SG}/mine", json={"intra_group": False}, headers={"If-Match": etag}),
            await m1.delete(f"{SG}/mine/rules/{rid}", headers={"If-Match": etag}),
            await m1.post(f"{SG}/mine/import", json={"rules": []}, headers={"If-Match": etag}),
            await m1.delete(f"{SG}/mine", headers={"If-Match": etag}),
        ):
            refused(stale, 412, "precondition_failed")
        g2 = await _group(m1, "mine")
        assert (len(g2["rules"]), g2["intra_group"], g2["revision"]) == (2, True, 1)
        done(await m1.patch(f"{SG}/mine", json={"intra_group": False},
                            headers={"If-Match": g2["etag"]}))  # fmt: skip

        # tags
        done(await m1.post(f"{SG}/mine/tags", json={"tags": ["tier=web"]}))
        assert (await _group(m1, "mine"))["tags"] == ["tier=web"]
        assert names((await lead.get(SG, params={"tag": "tier=web"})).json()) == ["mine"]
        done(await m1.delete(f"{SG}/mine"))
        done(await m2.delete(f"{SG}/theirs"))
