"""Identity administration through the SDK (sync and async) and the CLI, against a whole
in-process Corral over real HTTP (one stack for the module)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import (
    Conflict,
    Forbidden,
    InUse,
    InvalidInput,
    InvalidState,
    NameTaken,
    NotFound,
    Unauthenticated,
)
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import AsyncClient, Client
from tests.e2e.inprocess import threaded_stack
from tests.integration.identity.admin import STRONG
from tests.support.stack import ADMIN_PASSWORD


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c


def test_sdk_administration(admin: Client, url: str) -> None:
    with pytest.raises(InvalidInput) as weak:
        admin.users.create("sam", password="sam")
    assert {"too_short", "too_simple"} <= set(weak.value.context["problems"])
    admin.users.create("sam", password=STRONG, email="sam@example.org").wait()
    with pytest.raises(NameTaken):
        admin.users.create("sam", password=STRONG)
    admin.projects.create("sdk-p", description="via the SDK").wait()
    admin.roles.create("sdk-lister", permissions=["vm:list", "quota:get"]).wait()
    with pytest.raises(InvalidInput) as bad:
        admin.roles.create("sdk-bad", permissions=["zone:create"])
    assert bad.value.context["invalid"] == ["zone:create"]
    admin.members.add("sdk-p", "sam", "sdk-lister").wait()
    page = admin.members.list("sdk-p", role="sdk-lister")
    assert [(m.username, m.role) for m in page.items] == [("sam", "sdk-lister")]
    assert [u.name for u in admin.users.iter(project_id=admin.projects.get("sdk-p").id)] == ["sam"]

    with Client.login(url, "sam", STRONG) as sam:
        me = sam.users.me()
        assert [(m.project_name, m.role) for m in me.memberships] == [("sdk-p", "sdk-lister")]
        assert [p.name for p in sam.projects.list().items] == ["sdk-p"]
        assert sam.quotas.get("sdk-p").vms.limit is None
        with pytest.raises(Forbidden):
            sam.quotas.update("sdk-p", vms=3)
        with pytest.raises(Forbidden):
            sam.members.add("sdk-p", "admin", "viewer")
        admin.roles.update("sdk-lister", permissions=["vm:list"]).wait()
        with pytest.raises(Forbidden):
            sam.quotas.get("sdk-p")
        password = admin.users.reset_password("sam")
        assert password is not None and password != STRONG
        with pytest.raises(Unauthenticated):
            sam.users.me()
    with Client.login(url, "sam", password) as sam:
        assert sam.users.me().email == "sam@example.org"
    assert admin.users.reset_password("sam", STRONG) is None

    admin.quotas.update("sdk-p", vms=4, vcpus=16, memory_mb=8192).wait()
    admin.quotas.update("sdk-p", vcpus=None).wait()  # None: unlimited, the others kept
    quota = admin.quotas.get("sdk-p")
    assert (quota.vms.limit, quota.vcpus.limit, quota.memory_mb.limit) == (4, None, 8192)
    with pytest.raises(InvalidInput):
        admin.quotas.update("sdk-p", cpus=4)

    with pytest.raises(InvalidState) as builtin:
        admin.roles.delete("viewer")
    assert builtin.value.context["reason"] == "builtin_role"
    with pytest.raises(InUse):
        admin.roles.delete("sdk-lister")
    admin.members.update("sdk-p", "sam", "viewer").wait()
    with pytest.raises(Conflict) as twice:
        admin.members.add("sdk-p", "sam", "member")
    assert twice.value.context["reason"] == "already_member"
    admin.members.remove("sdk-p", "sam").wait()
    admin.roles.delete("sdk-lister").wait()
    admin.users.update("sam", enabled=False, email="").wait()
    assert (admin.users.get("sam").enabled, admin.users.get("sam").email) == (False, None)
    admin.users.delete("sam").wait()
    admin.projects.delete("sdk-p").wait()
    with pytest.raises(NotFound):
        admin.projects.get("sdk-p")


async def test_async_sdk(url: str) -> None:
    async with await AsyncClient.login(url, "admin", ADMIN_PASSWORD) as admin:
        op = await admin.projects.create("async-p", share_resources=True)
        await op.wait()
        project = await admin.projects.get("async-p")
        assert project.share_resources and project.id == op.target_id
        await (await admin.projects.update("async-p", share_resources=False)).wait()
        assert not (await admin.projects.get("async-p")).share_resources
        assert (await admin.quotas.get("async-p")).images.used == 0
        assert (await admin.users.me()).is_platform_admin
        roles = await admin.roles.list(builtin=True)
        assert {r.name for r in roles.items} == {"project-admin", "member", "viewer"}
        await (await admin.projects.delete("async-p")).wait()


class Corral:
    """``corral ARGS`` in-process, logged in through CORRAL_URL / CORRAL_TOKEN."""

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), obj=CliState(), input=input)


@pytest.fixture
def corral(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Corral:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")
    return Corral()


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


def test_cli_administration(corral: Corral, admin: Client, url: str) -> None:
    weak = corral("user", "create", "cli-ann", input="short\nshort\n")
    assert weak.exit_code == 2, weak.output
    assert weak.stderr.startswith("Error [invalid_input]: the password is too weak")
    created = corral("user", "create", "cli-ann", "--email", "ann@example.org",
                     input=f"{STRONG}\n{STRONG}\n")  # fmt: skip
    assert created.exit_code == 0, created.output
    ann = admin.users.get("cli-ann")
    assert created.stdout.endswith(f"User cli-ann created ({ann.id}).\n")
    assert corral("project", "create", "cli-p", "-d", "from the CLI").exit_code == 0
    added = corral("project", "add-member", "cli-p", "cli-ann", "--role", "viewer")
    assert added.stdout == "cli-ann is now viewer in cli-p.\n", added.output
    assert _rows(corral("project", "members", "cli-p").stdout)[1][:3] == [
        "cli-ann",
        ann.id,
        "viewer",
    ]
    rows = _rows(corral("user", "list", "--project", "cli-p").stdout)
    assert rows[0] == ["NAME", "ID", "ENABLED", "ADMIN", "2FA", "EMAIL", "PROJECTS"]
    assert rows[1:] == [["cli-ann", ann.id, "yes", "no", "no", "ann@example.org", "cli-p:viewer"]]
    shown = json.loads(corral("-o", "json", "user", "show", "cli-ann").stdout)
    assert shown["memberships"][0]["role"] == "viewer" and "password_hash" not in shown
    assert corral("project", "update-member", "cli-p", "cli-ann", "-r", "member").exit_code == 0
    assert corral("user", "update", "cli-ann", "--disable").stdout == "User cli-ann updated.\n"
    assert admin.users.get("cli-ann").enabled is False

    reset = corral("user", "reset-password", "cli-ann", "--generate")
    assert reset.exit_code == 0, reset.output
    generated = reset.stdout.rsplit(" ", 1)[-1].strip()
    assert reset.stdout.startswith("New password of cli-ann (shown once): ") and generated
    piped = corral("user", "reset-password", "cli-ann", "--password-stdin", input=f"{STRONG}\n")
    assert piped.stdout == "Password of cli-ann changed.\n"

    made = corral("role", "create", "cli-role", "-p", "vm:list,vm:get", "-p", "image:*")
    assert made.exit_code == 0, made.output
    assert admin.roles.get("cli-role").permissions == ["vm:list", "vm:get", "image:*"]
    bad = corral("role", "create", "cli-bad", "-p", "host:delete")
    assert (bad.exit_code, bad.stderr.splitlines()[0]) == (
        2,
        "Error [invalid_input]: not valid in a project role: host:delete",
    )
    builtin = corral("role", "update", "member", "-p", "vm:list")
    assert builtin.exit_code == 1 and builtin.stderr.startswith("Error [invalid_state]:")
    assert corral("role", "update", "cli-role", "-p", "vm:list").exit_code == 0
    assert ["cli-role"] in [r[:1] for r in _rows(corral("role", "list").stdout)]
    assert corral("role", "delete", "cli-role").stdout == "Role cli-role deleted.\n"

    assert corral("quota", "set", "cli-p", "--vms", "5", "--vcpus", "10").exit_code == 0
    out = corral("quota", "set", "cli-p", "--vcpus", "unlimited", "--memory-mb", "4096")
    assert out.stdout == "Quota of cli-p updated.\n", out.output
    rows = _rows(corral("quota", "show", "cli-p").stdout)
    assert rows[0] == ["RESOURCE", "USED", "LIMIT"]
    assert rows[1:4] == [["vms", "0", "5"], ["vcpus", "0", "unlimited"],
                         ["memory_mb", "0", "4096"]]  # fmt: skip
    assert json.loads(corral("quota", "show", "cli-p", "-o", "json").stdout)["vms"]["limit"] == 5
    assert corral("quota", "set", "cli-p", "--vms", "many").exit_code == 2
    assert corral("quota", "set", "cli-p").exit_code == 2

    assert corral("project", "remove-member", "cli-p", "cli-ann").exit_code == 0
    assert admin.members.list("cli-p").total == 0
    assert corral("user", "delete", "cli-ann").stdout == "User cli-ann deleted.\n"
    assert corral("project", "delete", "cli-p").stdout == "Project cli-p deleted.\n"
    assert "cli-p" not in corral("project", "list").stdout
