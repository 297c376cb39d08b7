"""AccessKeys and the audit log through the SDK (``client.access_keys``, ``client.audit``, sync and
async) and the CLI (``corral accesskey``, ``corral audit``), against a whole in-process Corral over
real HTTP (one stack for the module, in a thread, so blocking clients can talk to it)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.audit import AuditEvent, AuditResult
from corral.api.errors import InvalidInput, NotFound, Unauthenticated
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import AsyncClient, Client
from corral.up import Stack
from tests.support.stack import ADMIN_PASSWORD, running_stack


@dataclass
class Served:
    """The module's stack: its URL, and ``flush`` to have every audit record queued so far
    written (records are batched: without it a query may run before they are in the database)."""

    url: str
    stack: Stack
    loop: asyncio.AbstractEventLoop

    def flush(self) -> None:
        audit = self.stack.server.app.state.audit
        assert asyncio.run_coroutine_threadsafe(audit.flush(), self.loop).result(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ready = threading.Event()
    found: list[Served] = []
    errors: list[BaseException] = []
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        async with running_stack(tmp_path_factory.mktemp("stack"), fault_injection=False) as s:
            stop.append(asyncio.Event())
            found.append(Served(s.server.url, s, asyncio.get_running_loop()))
            ready.set()
            await stop[0].wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="corral-stack")
    thread.start()
    ready.wait(60)
    assert found, f"the stack did not start: {errors!r}"
    try:
        yield found[0]
    finally:
        found[0].loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
    assert not errors, errors


@pytest.fixture
def admin(served: Served) -> Iterator[Client]:
    with Client.login(served.url, "admin", ADMIN_PASSWORD) as c:
        yield c


def test_access_key_lifecycle(admin: Client, served: Served) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    key = admin.access_keys.create("sdk ci", expires_at=expires)
    assert key.id.startswith("CK") and key.secret and key.enabled
    assert key.description == "sdk ci" and key.expires_at is not None
    assert abs((key.expires_at - expires).total_seconds()) < 1
    listed = {k.id: k for k in admin.access_keys.list().items}
    assert key.id in listed and not hasattr(listed[key.id], "secret")

    with (
        Client(served.url, access_key=(key.id, "not-the-secret")) as wrong,
        pytest.raises(Unauthenticated),
    ):
        wrong.users.me()
    with Client(served.url, access_key=(key.id, key.secret)) as signed:
        assert signed.users.me().name == "admin"  # a signed GET
        signed.projects.create("signed-p").wait()  # a signed POST with a JSON body
        assert admin.projects.get("signed-p").name == "signed-p"
        assert next(k for k in admin.access_keys.list().items if k.id == key.id).last_used_at

        disabled = admin.access_keys.disable(key.id)
        assert disabled.id == key.id and disabled.enabled is False
        with pytest.raises(Unauthenticated):
            signed.users.me()
        assert admin.access_keys.enable(key.id).enabled is True
        assert signed.users.me().name == "admin"
        renamed = admin.access_keys.update(key.id, description="renamed")
        assert (renamed.description, renamed.enabled) == ("renamed", True)

        admin.access_keys.delete(key.id)
        with pytest.raises(Unauthenticated):
            signed.users.me()
    assert key.id not in {k.id for k in admin.access_keys.list().items}
    with pytest.raises(NotFound):
        admin.access_keys.delete(key.id)
    admin.projects.delete("signed-p").wait()


def test_audit_list_get_iter_export(admin: Client, served: Served, tmp_path: Path) -> None:
    key = admin.access_keys.create("for the audit")
    admin.access_keys.delete(key.id)
    served.flush()

    logins = admin.audit.list(action="auth.login", result=AuditResult.success, actor_name="admin")
    assert logins.total >= 1
    assert {(e.action, e.actor_name, e.result) for e in logins.items} == {
        ("auth.login", "admin", AuditResult.success)
    }
    both = admin.audit.list("action=in:auth.login|access_key.create", limit=1000)
    actions = [e.action for e in both.items]
    assert {"auth.login", "access_key.create"} <= set(actions)
    assert set(actions) == {"auth.login", "access_key.create"}
    created = [e for e in both.items if e.action == "access_key.create"]
    newest = created[0]  # newest first by default
    assert (newest.method, newest.path, newest.status_code) == ("POST", "/api/v1/access-keys", 201)
    assert newest.request is not None and newest.request["body"]["description"] == "for the audit"
    assert admin.audit.get(newest.id) == newest
    assert admin.audit.list(action="access_key.create", status_code=201).total == len(created)
    with pytest.raises(NotFound):
        admin.audit.get(10**9)
    deleted = admin.audit.list(action="access_key.delete")
    assert deleted.items[0].target_id == key.id

    # iter: pages cut by id, newest first or oldest first, the same records as one big page
    everything = [e.id for e in admin.audit.list(sort="-id", limit=1000).items]
    assert [e.id for e in admin.audit.iter(page_size=2)] == everything
    assert [e.id for e in admin.audit.iter(page_size=3, oldest_first=True)] == everything[::-1]
    assert [e.id for e in admin.audit.iter("action=access_key.create", page_size=1)] == [
        e.id for e in created
    ]
    since = admin.audit.list(since=newest.started_at, sort="id", limit=1000).items
    assert since and all(e.started_at >= newest.started_at for e in since)
    until = admin.audit.list(until=newest.started_at.isoformat(), limit=1000).items
    assert newest.id not in {e.id for e in until}

    # export: streamed CSV with a header line, and JSON to a file written whole
    text = b"".join(admin.audit.export("csv", action="access_key.create")).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(AuditEvent.model_fields)
    assert [int(r[0]) for r in rows[1:]] == sorted(e.id for e in created)  # oldest first
    assert {r[rows[0].index("action")] for r in rows[1:]} == {"access_key.create"}
    target = tmp_path / "audit.json"
    target.write_text("old")
    size = admin.audit.export_to(target, "json", q="action=access_key.create")
    exported = json.loads(target.read_text())
    assert size == target.stat().st_size
    assert [e["id"] for e in exported] == sorted(e.id for e in created)
    assert not (tmp_path / "audit.json.part").exists()
    buffer = io.BytesIO()
    assert admin.audit.export_to(buffer, "csv", action="access_key.create") == len(text)
    assert buffer.getvalue().decode() == text

    with pytest.raises(InvalidInput):
        admin.audit.export("xml")
    with pytest.raises(InvalidInput):  # refused by the server: nothing written, old file kept
        admin.audit.export_to(target, "csv", q="no_such_field=1")
    assert json.loads(target.read_text()) == exported
    assert not (tmp_path / "audit.json.part").exists()
    with pytest.raises(InvalidInput):
        admin.audit.list(since="yesterday")


async def test_async_sdk(served: Served) -> None:
    async with await AsyncClient.login(served.url, "admin", ADMIN_PASSWORD) as admin:
        key = await admin.access_keys.create("async")
        assert key.id in {k.id for k in (await admin.access_keys.list()).items}
        async with AsyncClient(served.url, access_key=(key.id, key.secret)) as signed:
            assert (await signed.users.me()).name == "admin"
            await admin.access_keys.disable(key.id)
            with pytest.raises(Unauthenticated):
                await signed.users.me()
        await admin.access_keys.delete(key.id)
        await asyncio.to_thread(served.flush)
        ids = [e.id async for e in admin.audit.iter(action="access_key.update", page_size=1)]
        assert ids and ids == sorted(ids, reverse=True)
        chunks = [c async for c in admin.audit.export("json", action="access_key.update")]
        assert [e["id"] for e in json.loads(b"".join(chunks))] == sorted(ids)
        assert (await admin.audit.get(ids[0])).action == "access_key.update"


class Corral:
    """``corral ARGS`` in-process, logged in through CORRAL_URL / CORRAL_TOKEN."""

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), obj=CliState())


@pytest.fixture
def corral(
    admin: Client, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Corral:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", served.url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")
    return Corral()


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


def test_cli_accesskey(corral: Corral, served: Served) -> None:
    made = corral("accesskey", "create", "-d", "cli json", "-o", "json")
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    assert key["id"].startswith("CK") and key["secret"] and key["description"] == "cli json"
    assert "cannot be shown again" in made.stderr

    table = corral("accesskey", "create", "--description", "cli table", "--expires", "30d")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("AccessKey ID: CK") and lines[1].startswith("Secret:")
    table_id, table_secret = lines[0].split()[-1], lines[1].split()[-1]
    assert table.stderr.startswith("Warning: the secret is shown this once")
    with Client(served.url, access_key=(table_id, table_secret)) as signed:
        assert signed.users.me().name == "admin"

    rows = _rows(corral("accesskey", "list").stdout)
    assert rows[0][:2] == ["ID", "ENABLED"]
    assert {key["id"], table_id} <= {r[0] for r in rows[1:]}
    listed = json.loads(corral("accesskey", "list", "-o", "json").stdout)
    assert all("secret" not in k for k in listed)
    assert next(k for k in listed if k["id"] == table_id)["expires_at"] is not None

    with Client(served.url, access_key=(key["id"], key["secret"])) as signed:
        assert signed.users.me().name == "admin"
        off = corral("accesskey", "disable", key["id"])
        assert off.stdout == f"AccessKey {key['id']} disabled.\n", off.output
        with pytest.raises(Unauthenticated):
            signed.users.me()
        on = corral("accesskey", "enable", key["id"], "-o", "json")
        assert json.loads(on.stdout)["enabled"] is True
        assert signed.users.me().name == "admin"
        gone = corral("accesskey", "delete", key["id"])
        assert gone.stdout == f"AccessKey {key['id']} deleted.\n"
        with pytest.raises(Unauthenticated):
            signed.users.me()
    again = corral("accesskey", "delete", key["id"])
    assert again.exit_code == 1 and again.stderr.startswith("Error [not_found]:")
    assert corral("accesskey", "delete", table_id).exit_code == 0
    assert corral("accesskey", "create", "--expires", "soon").exit_code == 2


def test_cli_audit(corral: Corral, served: Served, tmp_path: Path) -> None:
    made = json.loads(corral("accesskey", "create", "-d", "audited", "-o", "json").stdout)
    assert corral("accesskey", "delete", made["id"]).exit_code == 0
    served.flush()

    logins = corral("audit", "list", "--action", "auth.login", "--user", "admin")
    assert logins.exit_code == 0, logins.output
    rows = _rows(logins.stdout)
    assert rows[0][:4] == ["ID", "TIME", "ACTOR", "ACTION"]
    assert rows[1:] and all(r[3:5] == ["admin", "auth.login"] for r in rows[1:])

    keys = json.loads(corral("audit", "list", "--action", "access_key.*", "-o", "json").stdout)
    by_action = {e["action"] for e in keys["items"]}
    assert {"access_key.create", "access_key.delete"} <= by_action
    assert all(a.startswith("access_key.") for a in by_action)
    listed = corral("audit", "list", "--q", "action=access_key.create", "--result", "success",
                    "--since", "1h", "--limit", "1", "-o", "json")  # fmt: skip
    created = json.loads(listed.stdout)
    assert created["limit"] == 1 and len(created["items"]) == 1
    newest = created["items"][0]
    assert newest["request"]["body"]["description"] == "audited"
    none_yet = json.loads(corral("audit", "list", "--until", "1h", "-o", "json").stdout)
    assert newest["id"] not in {e["id"] for e in none_yet["items"]}

    shown = corral("audit", "show", str(newest["id"]))
    assert shown.exit_code == 0, shown.output
    assert ["action", "access_key.create"] in _rows(shown.stdout)

    exported = corral("audit", "export", "--format", "csv", "--action", "access_key.create")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == list(AuditEvent.model_fields) and len(rows) >= 2
    assert newest["id"] in {int(r[0]) for r in rows[1:]}
    file = tmp_path / "export.json"
    wrote = corral("audit", "export", "--format", "json", "-f", str(file), "--user", "admin")
    assert wrote.stdout == f"Exported {file.stat().st_size} bytes to {file}.\n", wrote.output
    assert {e["actor_name"] for e in json.loads(file.read_text())} == {"admin"}

    bad = corral("audit", "list", "--q", "no_such_field=1")
    assert bad.exit_code == 2 and "unknown field 'no_such_field'" in bad.stderr
    assert corral("audit", "list", "--since", "last tuesday").exit_code == 2
    assert corral("audit", "show", "999999999").exit_code == 1
