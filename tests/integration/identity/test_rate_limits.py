"""Expensive calls are rate-limited per user: past the burst, 429 with Retry-After; other users
keep their own share; cheap calls are not limited."""

from __future__ import annotations

from pathlib import Path

from tests.integration.identity.admin import refused
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack


async def test_expensive_calls_are_rate_limited(tmp_path: Path) -> None:
    limits = {"expensive_rate_per_s": 0.01, "expensive_burst": 3}
    async with (
        running_stack(tmp_path, server_overrides=limits) as stack,
        api_client(stack) as admin,
    ):
        vm = {"name": "v", "image": "missing", "cpus": 1, "memory_mb": 64}
        for _ in range(3):  # refused for another reason, but each one counts
            refused(await admin.post("/vms", json=vm), 404, "not_found")
        r = await admin.post("/vms", json=vm)
        error = refused(r, 429, "rate_limited")
        assert float(r.headers["Retry-After"]) >= 1 and error["context"]["retry_after_s"] > 0
        refused(await admin.post("/images", json={"name": "i1"}), 429, "rate_limited")
        r = await admin.get("/audit-events/export")
        assert r.status_code == 429
        # cheap calls go on
        assert (await admin.get("/vms")).status_code == 200
        # another user has their own bucket
        pa = await make_project(stack, "pa")
        await make_user(stack, "alice", {pa: "member"})
        async with client_as(stack, "alice") as alice:
            r = await alice.post("/images", json={"name": "mine"})
            assert r.status_code == 202, r.text
