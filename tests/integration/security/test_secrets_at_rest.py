"""Secrets stay secret: a realistic session (admin login, a user with a password, TOTP enrolment,
an AccessKey and signed requests, adding a host, creating a VM, a failed login) writes none of its
secrets to the logs (everything at DEBUG), to the audit log or to the API; host tokens are sealed at
rest and the database file never holds one in plain text."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from bench.common import make_qcow2
from sqlalchemy import select

from corral.api.signing import signed_headers
from corral.server.agents import host_tokens
from corral.server.agents.client import EnrollmentTokens
from corral.server.db.tables import HostRow, VmRow
from corral.server.query import specs
from corral.server.query.schema import QuerySpec
from corral.server.secretbox import SecretBox
from corral.up import Stack, start_stack
from tests.integration.security.conftest import LogFile, leaks

USER_PASSWORD = "Quiet-River-Stone-71"
WRONG_PASSWORD = "Not-The-Admin-Pass-38"


def walk_keys(obj: Any) -> Iterator[str]:
    """Every mapping key in a JSON document, at any depth."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from walk_keys(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from walk_keys(item)


async def ok(r: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


async def done(c: httpx.AsyncClient, r: httpx.Response, auth: dict[str, str]) -> dict[str, Any]:
    """The finished operation of a 202 answer (waited for as ``auth``), checked succeeded."""
    op = await ok(r, 202)
    wait = await c.get(f"/operations/{op['id']}", params={"wait": 60}, headers=auth)
    finished = await ok(wait)
    assert finished["status"] == "succeeded", finished
    return finished


async def host_secrets(stack: Stack) -> dict[str, str]:
    """Every host's token (opened), sealed value and digest."""
    box = stack.server.services.secrets
    async with stack.server.services.sessionmaker() as s:
        rows = list(await s.scalars(select(HostRow)))
    found = {}
    for row in rows:
        found[f"host token {row.name}"] = host_tokens.open_token(box, row)
        found[f"sealed host token {row.name}"] = row.token_sealed
        found[f"host token digest {row.name}"] = row.token_digest
    return found


def spec_columns() -> set[Any]:
    columns = set()
    for spec in vars(specs).values():
        if isinstance(spec, QuerySpec):
            columns |= {f.column for f in spec.fields.values()}  # type: ignore[union-attr]
    return columns


async def test_a_session_leaks_no_secret(
    tmp_path: Path, log_file: LogFile, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    enrollment: list[str] = []
    issue = EnrollmentTokens.issue

    def recording_issue(self: EnrollmentTokens, host_id: str) -> str:
        token = issue(self, host_id)
        enrollment.append(token)
        return token

    monkeypatch.setattr(EnrollmentTokens, "issue", recording_issue)
    monkeypatch.delenv("CORRAL_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("CORRAL_DATABASE_URL", raising=False)
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    secrets: dict[str, str] = {}
    stack = await start_stack(
        data_dir=tmp_path / "data",
        port=0,
        agent_port=0,
        host="127.0.0.1",
        tls=False,
        driver="simulator",
        sim_hosts=2,
        agent_overrides={"heartbeat_interval": 0.3},
    )
    try:
        svc = stack.server.services
        assert stack.server.admin_password  # generated at first start
        secrets["admin password"] = stack.server.admin_password
        secrets["master key"] = svc.secrets.current.to_b64()
        base = f"{stack.server.url}/api/v1"
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            # A failed login, then the admin's.
            r = await c.post("/auth/login", json={"username": "admin", "password": WRONG_PASSWORD})
            assert r.status_code == 401
            secrets["wrong password"] = WRONG_PASSWORD
            login = {"username": "admin", "password": stack.server.admin_password}
            admin_token = (await ok(await c.post("/auth/login", json=login)))["token"]
            secrets["admin bearer token"] = admin_token
            admin = {"Authorization": f"Bearer {admin_token}"}

            # A user with a password, in a project.
            await done(c, await c.post("/projects", json={"name": "p"}, headers=admin), admin)
            user = {"name": "sam", "password": USER_PASSWORD}
            await done(c, await c.post("/users", json=user, headers=admin), admin)
            secrets["user password"] = USER_PASSWORD
            member = {"user": "sam", "role": "member"}
            await done(c, await c.post("/projects/p/members", json=member, headers=admin), admin)
            login = {"username": "sam", "password": USER_PASSWORD}
            sam_token = (await ok(await c.post("/auth/login", json=login)))["token"]
            secrets["user bearer token"] = sam_token
            sam = {"Authorization": f"Bearer {sam_token}"}

            # TOTP enrolment; then a login with a recovery code.
            enrol = await ok(await c.post("/auth/totp", headers=sam))
            secrets["totp secret"] = enrol["secret"]
            secrets["otpauth uri"] = enrol["otpauth_uri"]
            code = pyotp.TOTP(enrol["secret"]).now()
            confirm = await c.post("/auth/totp/confirm", json={"code": code}, headers=sam)
            recovery = (await ok(confirm))["recovery_codes"]
            secrets |= {f"recovery code {i}": code for i, code in enumerate(recovery)}
            login = {"username": "sam", "password": USER_PASSWORD, "otp": recovery[0]}
            secrets["user bearer token 2"] = (await ok(await c.post("/auth/login", json=login)))[
                "token"
            ]

            # An AccessKey, and signed requests with it (a GET, a VM create).
            key = await ok(
                await c.post("/access-keys", json={"description": "ci"}, headers=sam), 201
            )
            key_id, secrets["access key secret"] = key["id"], key["secret"]
            path = "/api/v1/vms"
            signed = signed_headers(key_id, key["secret"], "GET", path, "", b"")
            assert (await c.get(f"{stack.server.url}{path}", headers=signed)).status_code == 200

            # Adding a host: remove one of the local hosts and add its agent again.
            hosts = (await ok(await c.get("/hosts", headers=admin)))["items"]
            old = hosts[0]
            secrets |= {f"old {k}": v for k, v in (await host_secrets(stack)).items()}
            await ok(await c.delete(f"/hosts/{old['id']}", headers=admin), 202)
            again = {"url": old["url"], "cluster": "default", "name": "again"}
            await done(c, await c.post("/hosts", json=again, headers=admin), admin)

            # A VM (its VNC password goes to the agent), created with a signed request.
            await done(c, await c.post("/images", json={"name": "tiny"}, headers=admin), admin)
            r = await c.put("/images/tiny/data", content=qcow.read_bytes(), headers=admin)
            assert r.status_code in (200, 202), r.text
            body = json.dumps({"name": "web", "image": "tiny", "cpus": 1, "memory_mb": 64}).encode()
            signed = signed_headers(key_id, key["secret"], "POST", path, "", body)
            signed["Content-Type"] = "application/json"
            r = await c.post(f"{stack.server.url}{path}", content=body, headers=signed)
            await done(c, r, admin)
            async with svc.sessionmaker() as s:
                vnc = await s.scalar(select(VmRow.vnc_password).where(VmRow.name == "web"))
            assert vnc
            secrets["vnc password"] = vnc
            secrets |= await host_secrets(stack)
            assert len(enrollment) == 3  # two local hosts, then "again"
            secrets |= {f"enrollment token {i}": t for i, t in enumerate(enrollment)}

            # The API never returns host tokens, sealed or digested, nor lets anyone query them.
            listed = await ok(await c.get("/hosts", headers=admin))
            assert listed["total"] == 2
            one = await ok(await c.get(f"/hosts/{listed['items'][0]['id']}", headers=admin))
            for answer in (listed, one):
                assert not [k for k in walk_keys(answer) if "token" in k.lower()], answer
                assert leaks(json.dumps(answer), secrets) == []
            digest = host_tokens.token_digest(secrets["host token again"])
            for params in (
                {"q": f"token_digest={digest}"},
                {"q": f"token={secrets['host token again']}"},
                {"sort": "token_sealed"},
            ):
                r = await c.get("/hosts", params=params, headers=admin)
                assert 400 <= r.status_code < 500, (params, r.text)
                assert leaks(r.text, secrets) == []
            assert {HostRow.token_sealed, HostRow.token_digest}.isdisjoint(spec_columns())

            # A log call that would leak is scrubbed (the server installed redaction at start).
            logging.getLogger("corral.server.canary").debug(
                "canary Authorization: Bearer %s password=%s", sam_token, USER_PASSWORD
            )

            # Nothing in the audit log's request summaries either.
            assert await stack.server.app.state.audit.flush()
            audit = await c.get("/audit-events", params={"limit": 1000}, headers=admin)
            events = (await ok(audit))["items"]
            assert any(e["action"] == "auth.login" or "login" in e["path"] for e in events)
            assert any(e["method"] == "POST" and e["path"] == "/api/v1/vms" for e in events)
            assert leaks(audit.text, secrets) == []
    finally:
        await stack.stop()

    logs = log_file.text()
    assert "enrollment as host" in logs  # the agent's records were captured ...
    assert " DEBUG " in logs  # ... at DEBUG
    canary = [line for line in logs.splitlines() if "canary Authorization" in line]
    assert len(canary) == 1 and canary[0].endswith("password=***"), canary
    assert leaks(logs, secrets) == [], [line for line in logs.splitlines() if leaks(line, secrets)]
    assert leaks(caplog.text, secrets) == []
    assert "canary" in caplog.text

    # At rest: the database holds no host token, nor enrollment token, in plain text.
    data = tmp_path / "data"
    db_files = [p for p in data.iterdir() if p.name.startswith("corral.db")]
    assert db_files
    plain = {k: v for k, v in secrets.items() if k.startswith(("host token", "old host token"))}
    plain |= {k: v for k, v in secrets.items() if k.startswith("enrollment")}
    plain = {k: v for k, v in plain.items() if "digest" not in k}
    for db_file in db_files:
        raw = db_file.read_bytes().decode("latin-1")
        assert leaks(raw, plain) == [], db_file.name
    conn = sqlite3.connect(data / "corral.db")
    try:
        rows = conn.execute("SELECT * FROM hosts").fetchall()
        sealed = [v for (v,) in conn.execute("SELECT token_sealed FROM hosts")]
    finally:
        conn.close()
    assert len(rows) == 2 and all(SecretBox.is_sealed(v) for v in sealed)
    assert leaks(repr(rows), plain) == []
