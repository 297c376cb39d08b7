"""``host.add`` with the operator's fingerprint of the agent's bootstrap certificate: a wrong one
stops the enrollment before anything is sent to the agent, the right one enrolls."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from corral.api.hosts import HostCreate
from corral.api.operations import Operation
from corral.server.db.tables import HostRow
from corral.up import Stack
from corral.util.tls import fingerprint
from tests.integration.enroll.conftest import tls_stack


async def add_with_fingerprint(stack: Stack, url: str, name: str, fp: str) -> Operation:
    """``corral host add URL --cluster default --name NAME --fingerprint FP``, waited for."""
    from corral.server.services import hosts

    svc = stack.server.services
    spec = HostCreate(url=url, cluster="default", name=name, cert_fingerprint=fp)
    op = await hosts.add_host(svc=svc, spec=spec)
    return await svc.runner.wait(op.id, 30)


async def test_fingerprint_is_checked(tmp_path: Path) -> None:
    from corral.server.services import hosts

    async with tls_stack(tmp_path, sim_hosts=1) as stack:
        svc = stack.server.services
        async with svc.sessionmaker() as s:
            old = await s.scalar(select(HostRow))
        assert old is not None and stack.agent.cert_pem is not None
        await hosts.remove_host(svc=svc, ref=old.id)
        runtime = next(iter(stack.agent.runtimes.values()))
        assert runtime.attachment.current is None

        with pytest.raises(ValidationError):  # not a SHA-256 fingerprint: refused up front
            HostCreate(url=old.url, cluster="default", cert_fingerprint="AB:CD")
        wrong = await add_with_fingerprint(stack, old.url, "wrong", "AB:" * 31 + "AB")
        assert wrong.error is not None and wrong.error.code == "invalid_input"
        assert "fingerprint" in wrong.error.message
        assert wrong.error.context["actual"] == fingerprint(stack.agent.cert_pem)
        assert runtime.attachment.current is None  # nothing was sent to the agent
        async with svc.sessionmaker() as s:
            assert await s.scalar(select(HostRow).where(HostRow.name == "wrong")) is None

        expected = "sha256:" + fingerprint(stack.agent.cert_pem).replace(":", "").lower()
        right = await add_with_fingerprint(stack, old.url, "right", expected)
        assert right.error is None, right.error
        assert runtime.attachment.current is not None


async def test_another_server_cannot_take_an_enrolled_agent(tmp_path: Path) -> None:
    from corral.api.hosts import HostCreate
    from corral.api.zones import ClusterCreate, ZoneCreate
    from corral.server.app import start
    from corral.server.services import hosts, inventory
    from corral.server.settings import ServerSettings

    async with tls_stack(tmp_path / "a", sim_hosts=1) as stack:
        runtime = next(iter(stack.agent.runtimes.values()))
        owner = runtime.attachment.current
        assert owner is not None
        settings = ServerSettings(
            data_dir=tmp_path / "b", host="127.0.0.1", port=0, admin_password="pw-b-1234"
        )
        other = await start(settings)
        try:
            svc = other.services
            await inventory.create_zone(svc=svc, spec=ZoneCreate(name="z"))
            await inventory.create_cluster(svc=svc, spec=ClusterCreate(name="c", zone="z"))
            op = await hosts.add_host(svc=svc, spec=HostCreate(url=stack.agent.url(0), cluster="c"))
            done = await svc.runner.wait(op.id, 30)
            assert done.error is not None and done.error.code == "unauthenticated", done
            assert "already attached" in done.error.message
        finally:
            await other.stop()
        assert runtime.attachment.current == owner  # still the first server's, identity intact
        assert runtime.attachment.identity is not None
        assert runtime.attachment.identity.host_id == owner.host_id
