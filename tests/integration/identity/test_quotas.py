"""Project quotas are checked in the transaction of the claim: parallel creates never overshoot,
deletes and rollbacks give the usage back (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from bench.common import make_qcow2
from sqlalchemy import update

from corral.server.db.tables import QuotaRow
from corral.server.identity.quotas import usage
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack, wait_op

VM = {"image": "tiny", "cpus": 1, "memory_mb": 64, "disk_gb": 1}


async def _usage(stack: object, project_id: str) -> dict[str, int]:
    async with stack.server.services.sessionmaker() as s:  # type: ignore[attr-defined]
        return {k: used for k, (_, used) in (await usage(s, project_id)).items()}


@pytest.mark.postgres
async def test_parallel_creates_never_overshoot_and_usage_comes_back(
    tmp_path: Path, database_url: str | None
) -> None:
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with running_stack(tmp_path / "s", sim_hosts=4, database_url=database_url) as stack:
        project = await make_project(stack, "limited")
        await make_user(stack, "carol", {project: "member"})
        async with stack.server.services.sessionmaker.begin() as s:
            await s.execute(
                update(QuotaRow).where(QuotaRow.project_id == project).values(vms_limit=3,
                                                                              vcpus_limit=4)
            )  # fmt: skip
        async with api_client(stack) as admin:
            r = await admin.post("/images", json={"name": "tiny"})
            assert r.status_code == 202
            assert (
                await admin.put("/images/tiny/data", content=qcow.read_bytes())
            ).status_code == 202
        async with client_as(stack, "carol") as carol:

            async def create(i: int) -> httpx.Response:
                return await carol.post("/vms", json={"name": f"vm{i}", **VM})

            answers = await asyncio.gather(*(create(i) for i in range(10)))
            accepted = [r for r in answers if r.status_code == 202]
            refused = [r for r in answers if r.status_code != 202]
            assert len(accepted) == 3, [r.text for r in answers]
            for r in refused:
                assert r.status_code == 409, r.text
                err = r.json()["error"]
                assert err["code"] == "quota_exceeded"
                assert (err["context"]["resource"], err["context"]["limit"]) == ("vms", 3)
            for r in accepted:
                assert (await wait_op(carol, r.json()))["status"] == "succeeded"
            assert (await _usage(stack, project))["vms"] == 3
            assert (await _usage(stack, project))["vcpus"] == 3

            # a resize beyond the vCPU quota fails and changes nothing
            name = (await carol.get(f"/vms/{accepted[0].json()['target_id']}")).json()["name"]
            await wait_op(carol, (await carol.post(f"/vms/{name}/stop")).json())
            op = await wait_op(carol, (await carol.post(f"/vms/{name}/resize",
                                                        json={"cpus": 3})).json())  # fmt: skip
            assert op["status"] == "failed" and op["error"]["code"] == "quota_exceeded", op
            assert (await _usage(stack, project))["vcpus"] == 3

            # delete gives the usage back
            op = await wait_op(carol, (await carol.delete(f"/vms/{name}")).json())
            assert op["status"] == "succeeded", op
            assert (await _usage(stack, project))["vms"] == 2
            assert (await _usage(stack, project))["memory_mb"] == 128

            # a create that fails and rolls back gives it back too
            r = await carol.post("/vms", json={"name": "doomed", **VM, "host": "no-such-host"})
            assert r.status_code == 404
            async with api_client(stack) as admin:
                r = await admin.post(
                    "/debug/faults", json={"workflow": "vm.create", "step": "define"}
                )
                assert r.status_code == 200, r.text
            r = await carol.post("/vms", json={"name": "rolled-back", **VM})
            assert r.status_code == 202, r.text
            assert (await wait_op(carol, r.json()))["status"] == "failed"
            assert (await _usage(stack, project))["vms"] == 2
