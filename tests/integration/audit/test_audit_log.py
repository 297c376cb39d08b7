"""The audit log through the REST API: one record per mutating call and per login, with the right
fields, secrets never stored nor exported, queries, CSV/JSON export, and no way to change records."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx

from corral.up import Stack
from tests.integration.audit.conftest import events
from tests.integration.test_vm_sim import make_qcow2
from tests.support.identity import PASSWORD, client_as, make_project, make_user
from tests.support.stack import api_client, upload_image, wait_op

LOGIN_SECRET = "Zq-login-secret-7781"
BODY_SECRET = "Zq-body-secret-9920"


def anon(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1", timeout=30)


async def test_calls_and_logins_make_one_record_each(any_stack: Stack, tmp_path: Path) -> None:
    stack = any_stack
    async with api_client(stack) as c, anon(stack) as a:
        admin_id = (await events(c, stack, "action=auth.login"))[0]["actor_id"]
        assert admin_id
        r = await a.post("/auth/login", json={"username": "admin", "password": LOGIN_SECRET})
        assert r.status_code == 401
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        r = await c.post("/vms", json={"name": "web1", "image": "tiny", "cpus": 1, "memory_mb": 64})
        assert r.status_code == 202, r.text
        op = await wait_op(c, r.json())
        assert op["status"] == "succeeded"
        bad = await c.post("/vms", json={"name": "web2", "image": "tiny", "cpus": 0})
        assert bad.status_code == 422
        await c.get("/vms")  # reads are not recorded

        logins = await events(c, stack, "action=auth.login")
        creates = await events(c, stack, "action=vm.create")
        assert [e["result"] for e in logins] == ["success", "failure"]
        assert [e["status_code"] for e in creates] == [202, 422]
        assert await events(c, stack, "method=GET") == []

    ok, failed = logins
    assert (ok["actor_id"], ok["actor_name"], ok["target_type"], ok["target_id"]) == (
        admin_id, "admin", "user", admin_id)  # fmt: skip
    assert ok["request"] == {"body": {"username": "admin", "password": "***"}}
    assert failed["actor_id"] is None and failed["actor_name"] == "admin"
    assert failed["target_id"] == admin_id
    assert (failed["status_code"], failed["error_code"]) == (401, "unauthenticated")

    good, bad_rec = creates
    assert good["actor_id"] == admin_id and good["auth_method"] == "token"
    assert (good["method"], good["path"], good["target_type"]) == ("POST", "/api/v1/vms", "vm")
    assert good["target_id"] == op["target_id"] and good["operation_id"] == op["id"]
    assert good["project_id"] is not None and good["error_code"] is None
    assert good["request"]["body"] == {"name": "web1", "image": "tiny", "cpus": 1, "memory_mb": 64}
    assert bad_rec["result"] == "failure" and bad_rec["error_code"] == "invalid_input"
    assert bad_rec["error_message"] == bad.json()["error"]["message"]
    assert bad_rec["operation_id"] is None and bad_rec["target_id"] is None
    for e in [*logins, *creates]:
        assert e["client_ip"] == "127.0.0.1"
        assert e["started_at"] <= e["finished_at"]


async def test_secrets_are_never_stored_nor_exported(stack: Stack, tmp_path: Path) -> None:
    async with api_client(stack) as c, anon(stack) as a:
        await a.post("/auth/login", json={"username": "nobody", "password": LOGIN_SECRET})
        await a.post("/auth/login", json={"username": "admin", "password": LOGIN_SECRET})
        # bodies the app refuses still get a summary: masked, and nested secrets too
        body = {"name": "x", "image": "tiny", "cpus": 1, "memory_mb": 64,
                "user_data": {"admin_password": BODY_SECRET, "api_key": BODY_SECRET}}  # fmt: skip
        r = await c.post(f"/vms?token={BODY_SECRET}", json=body)
        assert r.status_code == 422
        r = await c.post("/vms", content=b'{"password": "' + BODY_SECRET.encode() + b'"',
                         headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 422  # malformed JSON: the body is not kept, even masked
        recs = await events(c, stack)
        csv_text = (await c.get("/audit-events/export", params={"format": "csv"})).text
        json_text = (await c.get("/audit-events/export", params={"format": "json"})).text

    vm_recs = [e for e in recs if e["action"] == "vm.create"]
    assert vm_recs[0]["request"]["body"]["user_data"] == {"admin_password": "***", "api_key": "***"}
    assert vm_recs[0]["request"]["query"] == {"token": "***"}
    assert vm_recs[1]["request"] == {"body_unreadable": True, "content_type": "application/json",
                                     "size": len(BODY_SECRET) + 15}  # fmt: skip
    assert len(recs) >= 5 and "Zq-" not in json.dumps(recs)
    assert "nobody" in csv_text and "nobody" in json_text  # the exports hold the records...
    for text in (csv_text, json_text):
        assert LOGIN_SECRET not in text and BODY_SECRET not in text  # ...but not the secrets
    for f in tmp_path.glob("corral.db*"):
        raw = f.read_bytes()
        assert LOGIN_SECRET.encode() not in raw and BODY_SECRET.encode() not in raw, f


async def test_query_filters_and_visibility(any_stack: Stack) -> None:
    stack = any_stack
    project = await make_project(stack, "p1")
    await make_user(stack, "padmin", {project: "project-admin"})
    await make_user(stack, "viewer", {project: "viewer"})
    async with api_client(stack) as c, client_as(stack, "padmin") as p, anon(stack) as a:
        r = await p.post("/vms", json={"name": "a", "image": "nope", "cpus": 1, "memory_mb": 64})
        assert r.status_code == 404
        await a.post("/auth/login", json={"username": "viewer", "password": "wrong"})
        all_recs = await events(c, stack)
        assert {e["actor_name"] for e in all_recs} >= {"admin", "padmin", "viewer"}

        failures = await events(c, stack, "result=failure")
        assert failures and all(e["result"] == "failure" for e in failures)
        assert [e["actor_name"] for e in await events(c, stack, "actor~pad*")] == ["padmin"] * 2
        one = await events(c, stack, "action=vm.create,error_code=not_found,status>=400")
        assert len(one) == 1 and one[0]["project_id"] == project
        newest = all_recs[-1]["started_at"]
        r = await c.get("/audit-events", params={"since": newest})
        assert [e["id"] for e in r.json()["items"]] == [all_recs[-1]["id"]]
        r = await c.get("/audit-events", params={"until": newest, "sort": "-id", "limit": 2})
        page = r.json()
        assert page["total"] == len(all_recs) - 1 and len(page["items"]) == 2
        assert page["items"][0]["id"] == all_recs[-2]["id"]
        for bad in ({"q": "password=x"}, {"q": "status_code=abc"}, {"since": "yesterday"},
                    {"sort": "request"}):  # fmt: skip
            r = await c.get("/audit-events", params=bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", bad
        r = await c.get(f"/audit-events/{one[0]['id']}")
        assert r.status_code == 200 and r.json() == one[0]
        r = await c.get("/audit-events", params={"q": "action=vm.create", "fields": "id,action"})
        assert r.json()["items"] == [{"id": one[0]["id"], "action": "vm.create"}]
        r = await c.get("/audit-events", params={"q": "result=failure", "count": "true"})
        assert r.json()["total"] == len(failures) and r.json()["items"] == []

        # a project admin sees their project's records only; others may not read the log
        r = await p.get("/audit-events", params={"limit": 1000})
        seen = r.json()["items"]
        assert [e["id"] for e in seen] == [one[0]["id"]]
        hidden = next(e for e in all_recs if e["project_id"] != project)
        assert (await p.get(f"/audit-events/{hidden['id']}")).status_code == 404
        async with client_as(stack, "viewer") as v:
            r = await v.get("/audit-events")
            assert r.status_code == 403
            r = await v.get("/audit-events/export")
            assert r.status_code == 403
    assert PASSWORD not in json.dumps(all_recs)


async def test_export_csv_and_json(any_stack: Stack) -> None:
    stack = any_stack
    async with api_client(stack) as c:
        for i in range(3):
            await c.post("/vms", json={"name": f"=cmd{i}", "image": "x", "cpus": 1})
        assert (await c.post("/vms/=cmd/stop")).status_code == 404
        recs = await events(c, stack)
        r = await c.get("/audit-events/export", params={"format": "json", "q": "action=vm.create"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        disposition = r.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="corral-audit-')
        assert disposition.endswith('.json"')
        assert r.json() == [e for e in recs if e["action"] == "vm.create"]

        r = await c.get("/audit-events/export")  # CSV by default, every record
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].endswith('.csv"')
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [int(row["id"]) for row in rows] == [e["id"] for e in recs]
        first = next(row for row in rows if row["action"] == "vm.create")
        want = next(e for e in recs if e["action"] == "vm.create")
        assert (first["actor_name"], first["status_code"], first["error_code"]) == (
            "admin", "422", "invalid_input")  # fmt: skip
        assert first["started_at"] == want["started_at"] and first["operation_id"] == ""
        assert json.loads(first["request"]) == want["request"]
        # a cell a spreadsheet would run as a formula is defused; the JSON export keeps the text
        assert [row["target_id"] for row in rows if row["action"] == "vm.stop"] == ["'=cmd"]
        assert all(not cell.startswith("=") for row in rows for cell in row.values())

        r = await c.get("/audit-events/export", params={"format": "json", "q": "action=none"})
        assert r.json() == []
        r = await c.get("/audit-events/export", params={"format": "xml"})
        assert r.status_code == 422
        r = await c.get("/audit-events/export", params={"q": "nope=1"})
        assert r.status_code == 400


async def test_records_cannot_be_changed_through_the_api(stack: Stack) -> None:
    async with api_client(stack) as c:
        before = await events(c, stack)
        target = before[0]["id"]
        for method in ("PUT", "PATCH", "DELETE"):
            r = await c.request(method, f"/audit-events/{target}", json={"action": "x"})
            assert r.status_code == 405, (method, r.text)
            assert r.json()["error"]["code"] == "method_not_allowed"
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = await c.request(method, "/audit-events", json={"action": "x"})
            assert r.status_code == 405, (method, r.text)
        after = await events(c, stack)
    assert after[: len(before)] == before
    attempts = after[len(before) :]
    assert len(attempts) == 7  # every attempt is itself recorded
    assert {(e["status_code"], e["result"]) for e in attempts} == {(405, "failure")}
    assert {e["action"] for e in attempts} == {
        "audit_event.create", "audit_event.update", "audit_event.delete"}  # fmt: skip


async def test_forwarded_for_is_believed_only_behind_a_trusted_proxy(stack: Stack) -> None:
    """The middleware itself, in process (the ASGI peer is 127.0.0.1): ``X-Forwarded-For`` is
    ignored unless the settings say a trusted proxy is in front, then its last address counts."""
    spoof = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    transport = httpx.ASGITransport(app=stack.server.app, client=("127.0.0.1", 5000))
    async with (
        api_client(stack) as c,
        httpx.AsyncClient(
            transport=transport, base_url="http://corral/api/v1", headers=c.headers
        ) as direct,
    ):
        await direct.post("/vms", json={}, headers=spoof)
        stack.server.settings.trusted_proxy = True
        await direct.post("/vms", json={}, headers=spoof)
        recs = await events(c, stack, "action=vm.create")
    assert [e["client_ip"] for e in recs] == ["127.0.0.1", "198.51.100.7"]


async def test_forwarded_for_over_http_is_ignored_by_default(stack: Stack) -> None:
    async with api_client(stack) as c:
        await c.post("/vms", json={}, headers={"X-Forwarded-For": "203.0.113.9"})
        recs = await events(c, stack, "action=vm.create")
    assert [e["client_ip"] for e in recs] == ["127.0.0.1"]
