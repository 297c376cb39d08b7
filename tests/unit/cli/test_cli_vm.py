"""``corral vm``: waiting, --no-wait, JSON output, errors and exit codes."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from corral.api.errors import InjectedFault
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk.testing import FakeCorral

from .conftest import Corral


def test_vm_create_waits_for_the_operation_and_reports(corral: Corral, seeded: FakeCorral) -> None:
    seeded.state.op_steps = 3
    before = len(seeded.requests)
    result = corral("vm", "create", "vm1", "--image", "img", "--cpus", "2", "--memory", "1G")
    assert result.exit_code == 0, result.output
    vm = next(iter(seeded.state.vms.values()))
    assert result.stdout == f"VM vm1 created ({vm.id}) on h1: running.\n"
    assert (vm.cpus, vm.memory_mb, vm.disk_gb) == (2, 1024, 10)
    polls = [r for r in seeded.requests[before:] if "wait" in r.url.params]
    assert len(polls) == 3


def test_vm_create_draws_a_progress_bar_on_a_terminal(corral: Corral, seeded: FakeCorral) -> None:
    seeded.state.op_steps = 3
    result = corral("vm", "create", "vm1", "-i", "img", "--offering", "small", force_terminal=True)
    assert result.exit_code == 0, result.output
    assert "vm.create" in result.stderr  # the (transient) bar was drawn on stderr
    assert result.stdout.startswith("VM vm1 created")


def test_no_wait_prints_the_operation_id(corral: Corral, seeded: FakeCorral) -> None:
    before = len(seeded.requests)
    result = corral("vm", "create", "vm1", "-i", "img", "--offering", "small", "--no-wait")
    assert result.exit_code == 0, result.output
    op_id = result.stdout.strip()
    assert seeded.state.operations[op_id].model.status == "queued"
    assert [r.method for r in seeded.requests[before:]] == ["POST"]


def test_disk_sizes_are_parsed_to_whole_gib(corral: Corral, seeded: FakeCorral) -> None:
    result = corral(
        "vm",
        "create",
        "vm1",
        "-i",
        "img",
        "--cpus",
        "1",
        "--memory",
        "256",
        "--disk",
        "512M",
        "--no-start",
    )
    assert result.exit_code == 0, result.output
    vm = next(iter(seeded.state.vms.values()))
    assert (vm.disk_gb, vm.memory_mb, vm.status) == (1, 256, "stopped")


def test_json_output_anywhere_on_the_line(corral: Corral, seeded: FakeCorral) -> None:
    created = corral("-o", "json", "vm", "create", "vm1", "-i", "img", "--offering", "small")
    assert created.exit_code == 0, created.output
    op = json.loads(created.stdout)
    assert (op["type"], op["status"]) == ("vm.create", "succeeded")
    for args in (
        ["-o", "json", "vm", "list"],
        ["vm", "list", "-o", "json"],
        ["vm", "list", "--output=json"],
    ):
        result = corral(*args)
        assert result.exit_code == 0, result.output
        page = json.loads(result.stdout)
        assert page["total"] == 1 and page["items"][0]["name"] == "vm1"
    shown = json.loads(corral("vm", "show", "vm1", "-o", "json").stdout)
    assert shown["id"] == op["target_id"]


def test_vm_list_and_show_as_tables(corral: Corral, seeded: FakeCorral) -> None:
    corral("vm", "create", "vm1", "-i", "img", "--offering", "small")
    listing = corral("vm", "list")
    assert listing.exit_code == 0, listing.output
    header, row = [
        line.split() for line in listing.stdout.splitlines() if line.strip() and "─" not in line
    ]
    assert header == ["NAME", "ID", "STATUS", "POWER", "CPUS", "MEMORY", "DISK", "HOST"]
    vm = next(iter(seeded.state.vms.values()))
    assert row == ["vm1", vm.id, "running", "running", "1", "512", "MiB", "1", "GiB", "h1"]
    shown = corral("vm", "show", "vm1")
    fields = dict(line.split(maxsplit=1) for line in shown.stdout.splitlines())
    assert fields["memory_mb"].strip() == "512 MiB" and fields["id"].strip() == vm.id


def test_power_actions(corral: Corral, seeded: FakeCorral) -> None:
    corral("vm", "create", "vm1", "-i", "img", "--offering", "small")
    assert corral("vm", "pause", "vm1").stdout == "VM vm1 paused.\n"
    assert corral("vm", "resume", "vm1").exit_code == 0
    stopped = corral("vm", "stop", "vm1", "--force")
    assert stopped.exit_code == 0, stopped.output
    stop_request = next(r for r in seeded.requests if r.url.path.endswith("/stop"))
    assert json.loads(stop_request.content) == {"force": True}
    assert corral("vm", "resize", "vm1", "--cpus", "3", "--memory", "2G").exit_code == 0
    vm = next(iter(seeded.state.vms.values()))
    assert (vm.cpus, vm.memory_mb, vm.status) == (3, 2048, "stopped")
    assert corral("vm", "delete", "vm1").stdout == "VM vm1 deleted.\n"
    assert seeded.state.vms == {}


def test_a_failed_operation_exits_1_with_each_hosts_reasons(
    corral: Corral, seeded: FakeCorral
) -> None:
    result = corral("vm", "create", "big", "-i", "img", "--cpus", "64", "--memory", "512")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Error [no_host_available]: no host can run VM big"
    assert lines[1:3] == ["Hosts:", "  h1: not enough CPUs: 64 wanted"]
    assert lines[3].startswith("  operation_id: ")


def test_an_injected_failure_prints_code_message_and_context(
    corral: Corral, seeded: FakeCorral
) -> None:
    seeded.fail_next("vm.start", InjectedFault("qemu died", step="start_domain"))
    corral("vm", "create", "vm1", "-i", "img", "--offering", "small", "--no-start")
    result = corral("vm", "start", "vm1")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        "Error [injected_fault]: qemu died",
        "  step: start_domain",
    ]


def test_errors_and_exit_codes(corral: Corral, seeded: FakeCorral) -> None:
    missing = corral("vm", "show", "nope")
    assert (missing.exit_code, missing.stderr.splitlines()[0]) == (
        1,
        "Error [not_found]: vm nope not found",
    )
    no_sizes = corral("vm", "create", "vm1", "-i", "img")
    assert no_sizes.exit_code == 2
    assert no_sizes.stderr.startswith("Error [invalid_input]: ")
    assert "give cpus and memory_mb, or an offering" in no_sizes.stderr
    assert corral("vm", "create", "vm1").exit_code == 2  # --image missing
    bad_size = corral("vm", "create", "vm1", "-i", "img", "--offering", "small", "--disk", "12Q")
    assert bad_size.exit_code == 2 and "not a size" in bad_size.stderr
    assert corral("vm", "resize", "vm1").exit_code == 2
    corral("vm", "create", "vm1", "-i", "img", "--offering", "small")
    state_error = corral("vm", "resume", "vm1")
    assert (state_error.exit_code, state_error.stderr.splitlines()[0]) == (
        1,
        "Error [invalid_state]: cannot resume VM vm1: it is running",
    )


def test_not_logged_in(fake: FakeCorral) -> None:
    result = CliRunner().invoke(app, ["vm", "list"], obj=CliState(transport=fake.transport))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error [unauthenticated]: not logged in")


def test_ctrl_c_stops_waiting_but_not_the_operation(corral: Corral, seeded: FakeCorral) -> None:
    def interrupted(request: httpx.Request) -> httpx.Response:
        if "wait" in request.url.params:
            raise KeyboardInterrupt
        return seeded.handle(request)

    state = CliState(transport=httpx.MockTransport(interrupted))
    args = ["vm", "create", "vm1", "-i", "img", "--offering", "small"]
    result = CliRunner().invoke(app, args, obj=state)
    assert result.exit_code == 130
    op_id = next(iter(seeded.state.operations.values().__reversed__())).model.id
    assert f"corral op wait {op_id}" in result.stderr


def test_environment_overrides_the_saved_login(
    corral: Corral, fake: FakeCorral, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", "bad-token")
    assert corral("zone", "list").exit_code == 1
    assert fake.requests[-1].headers["Authorization"] == "Bearer bad-token"
    monkeypatch.setenv("CORRAL_URL", "http://elsewhere.test")
    monkeypatch.setenv("CORRAL_TOKEN", fake.login_token())
    assert corral("zone", "list").exit_code == 0
    assert fake.requests[-1].url.host == "elsewhere.test"
    monkeypatch.delenv("CORRAL_TOKEN")
    result = corral("zone", "list")  # the saved token belongs to another server
    assert (result.exit_code, result.stderr[:29]) == (1, "Error [unauthenticated]: not ")
