"""Operation handles: waiting across polls, progress, failures, timeouts, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from corral.api.errors import (
    InjectedFault,
    NoHostAvailable,
    NotCancellable,
    OperationCancelled,
    Timeout,
)
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.sdk import Client
from corral.sdk.testing import FakeCorral

URL = "http://corral.test"


def test_wait_follows_the_operation_across_polls(seeded: Client, fake: FakeCorral) -> None:
    fake.state.op_steps = 4
    op = seeded.vms.create("vm1", image="img", offering="small")
    assert op.status is OperationStatus.queued and op.type == "vm.create"
    seen: list[tuple[OperationStatus, int]] = []
    before = len(fake.requests)
    assert op.wait(on_progress=lambda state: seen.append((state.status, state.progress))) is op
    assert seen == [
        (OperationStatus.queued, 0),
        (OperationStatus.running, 25),
        (OperationStatus.running, 50),
        (OperationStatus.running, 75),
        (OperationStatus.succeeded, 100),
    ]
    polls = fake.requests[before:]
    assert len(polls) == 4
    assert all(r.url.path == f"/api/v1/operations/{op.id}" for r in polls)
    assert polls[0].url.params["wait"] == "1"  # short chunks when someone watches progress
    assert op.done and op.finished_at is not None
    assert seeded.vms.get(op.target_id or "").status == "running"


def test_wait_without_progress_polls_in_long_chunks(seeded: Client, fake: FakeCorral) -> None:
    op = seeded.vms.create("vm1", image="img", offering="small").wait()
    assert fake.requests[-1].url.params["wait"] == "10"
    assert op.status is OperationStatus.succeeded


def test_a_failed_operation_raises_its_error(seeded: Client, fake: FakeCorral) -> None:
    fake.fail_next("vm.create", InjectedFault("disk creation failed", step="create_disk"))
    op = seeded.vms.create("vm1", image="img", offering="small")
    with pytest.raises(InjectedFault, match="disk creation failed") as err:
        op.wait()
    assert err.value.context == {"step": "create_disk", "operation_id": op.id}
    assert op.status is OperationStatus.failed
    assert seeded.vms.list().total == 0  # the fake rolled the VM back


def test_no_host_available_carries_the_reason_of_each_host(
    seeded: Client, fake: FakeCorral
) -> None:
    op = seeded.vms.create("big", image="img", cpus=64, memory_mb=512)
    with pytest.raises(NoHostAvailable) as err:
        op.wait()
    assert err.value.context["hosts"] == {"h1": ["not enough CPUs: 64 wanted"]}


def test_wait_gives_up_after_the_timeout(seeded: Client, fake: FakeCorral) -> None:
    fake.state.op_steps = 1_000_000
    op = seeded.vms.create("vm1", image="img", offering="small")
    with pytest.raises(Timeout, match="still running"):
        op.wait(timeout=0.05)
    assert op.status is OperationStatus.running


def test_wait_backs_off_when_the_server_answers_early_without_news() -> None:
    stuck = OperationModel(
        id="op1",
        type="vm.create",
        target_type="vm",
        target_id="vm1",
        status=OperationStatus.running,
        progress=10,
        created_at=datetime.now(UTC),
    )
    polls = []

    def ignore_wait(request: httpx.Request) -> httpx.Response:
        polls.append(request)
        return httpx.Response(200, content=stuck.model_dump_json())

    with Client(URL, "t", transport=httpx.MockTransport(ignore_wait)) as client:
        op = client.operations.get("op1")
        with pytest.raises(Timeout):
            op.wait(timeout=0.3)
    assert 2 <= len(polls) <= 4  # 0.2 s, 0.4 s... between polls, not a busy loop


def test_a_queued_operation_can_be_cancelled(seeded: Client) -> None:
    op = seeded.vms.create("vm1", image="img", offering="small")
    assert op.cancel().status is OperationStatus.cancelled
    with pytest.raises(OperationCancelled):
        op.wait()
    assert seeded.vms.list().total == 0


def test_a_running_operation_is_not_cancellable(seeded: Client, fake: FakeCorral) -> None:
    fake.state.op_steps = 1000
    op = seeded.vms.create("vm1", image="img", offering="small")
    with pytest.raises(Timeout):
        op.wait(timeout=0.01)
    assert op.refresh().status is OperationStatus.running
    with pytest.raises(NotCancellable):
        seeded.operations.cancel(op.id)


def test_operations_can_be_listed_and_filtered(seeded: Client) -> None:
    op = seeded.vms.create("vm1", image="img", offering="small").wait()
    page = seeded.operations.list(target_id=op.target_id)
    assert [o.type for o in page.items] == ["vm.create"]
    succeeded = list(seeded.operations.iter(status=OperationStatus.succeeded))
    assert {o.type for o in succeeded} >= {"zone.create", "image.upload", "vm.create"}
    again = seeded.operations.wait(op.id)
    assert again.id == op.id and again.status is OperationStatus.succeeded
