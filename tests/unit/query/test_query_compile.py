"""Compiled queries against real databases: every operator returns exactly the right rows.

Runs on SQLite, and on the session's PostgreSQL (marked ``postgres``; deselect with
``-m "not postgres"``) on data seeded once per module; each test runs in a transaction rolled back afterwards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import ColumnElement, create_engine, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from corral.api.errors import CorralError, InvalidInput
from corral.server.db.tables import (
    Base,
    ClusterRow,
    HostRow,
    ImageRow,
    VmRow,
    ZoneRow,
)
from corral.server.query import Relation, apply, count_stmt, parse_q, parse_sort, split_fields
from corral.server.query.schema import QuerySpec
from corral.server.query.specs import CLUSTERS, HOSTS, VMS
from tests.support import postgres

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def seed() -> list[Any]:
    """2 zones, 3 clusters, 3 hosts, 2 images, 6 VMs (one without host or image)."""
    rows: list[Any] = [
        ZoneRow(id="za", name="alpha"),
        ZoneRow(id="zb", name="beta"),
        ClusterRow(id="c1", name="c1", zone_id="za", cpu_overcommit=4.0),
        ClusterRow(id="c2", name="c2", zone_id="zb", cpu_overcommit=2.0),
        ClusterRow(id="c3", name="c3", zone_id="zb", cpu_overcommit=1.5),
    ]
    for hid, cluster, status, enabled in (
        ("h1", "c1", "connected", True),
        ("h2", "c2", "disconnected", False),
        ("h3", "c3", "connected", True),
    ):
        rows.append(
            HostRow(
                id=hid,
                name=hid,
                cluster_id=cluster,
                url=f"https://{hid}:7070",
                token_sealed=f"secret-{hid}",
                token_digest=f"digest-{hid}",
                status=status,
                enabled=enabled,
                memory_mb_used=0,
            )
        )
    rows += [ImageRow(id="debian", name="debian-12"), ImageRow(id="alpine", name="alpine")]
    vms = [
        ("vm1", "web-1", "running", 1024, "h1", "debian", None),
        ("vm2", "web-2", "running", 2048, "h2", "alpine", None),
        ("vm3", "db_1", "stopped", 4096, "h3", "debian", None),
        ("vm4", "dbx1", "error", 512, None, None, "disk 100% full"),
        ("vm5", "WEB-3", "creating", 1024, "h1", "debian", None),
        ("vm6", "cache", "stopped", 1024, "h3", "alpine", "no*star"),
    ]
    for i, (vid, name, status, memory, host, image, err) in enumerate(vms):
        rows.append(
            VmRow(
                id=vid,
                name=name,
                status=status,
                power_state="running" if status == "running" else "stopped",
                cpus=2 if memory < 2048 else 4,
                memory_mb=memory,
                disk_gb=10,
                host_id=host,
                image_id=image,
                vnc_password="pw",
                error=err,
                created_at=T0 + dt.timedelta(hours=i),
            )
        )
    return rows


_PG_DATABASES: dict[str, str] = {}
"""One seeded database per PostgreSQL server for this module (the tests only read)."""


async def pg_database(server: str) -> str:
    if server not in _PG_DATABASES:
        url = await postgres.create_database(server, f"q_{uuid.uuid4().hex[:12]}")
        engine = create_async_engine(url)
        try:
            async with engine.begin() as c:
                await c.run_sync(Base.metadata.create_all)
                await c.run_sync(_add_all, seed())
        finally:
            await engine.dispose()
        _PG_DATABASES[server] = url
    return _PG_DATABASES[server]


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A seeded SQLite file, built once for this module (the tests only read)."""
    path = tmp_path_factory.mktemp("query") / "corral.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        Base.metadata.create_all(c)
        _add_all(c, seed())
    engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def conn(request: pytest.FixtureRequest) -> AsyncIterator[AsyncConnection]:
    """A connection to the seeded database, in a transaction rolled back afterwards."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = await pg_database(request.getfixturevalue("pg_server"))
    engine = create_async_engine(url)
    try:
        async with engine.connect() as c:
            trans = await c.begin()
            yield c
            await trans.rollback()
    finally:
        await engine.dispose()


def _add_all(sync_conn: Any, rows: list[Any]) -> None:
    with Session(bind=sync_conn, join_transaction_mode="create_savepoint") as s:
        for row in rows:  # one by one: without relationship() the flush ignores FK order
            s.add(row)
            s.flush()
        s.commit()


async def ids(
    c: AsyncConnection,
    q: str,
    sort: str = "id",
    spec: QuerySpec = VMS,
    **kw: Any,
) -> list[str]:
    stmt = apply(select(spec.table.id), spec, parse_q(q), parse_sort(sort), **kw)
    return list((await c.scalars(stmt)).all())


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("status=running", ["vm1", "vm2"]),
        ("state=running", ["vm1", "vm2"]),
        ("status!=running", ["vm3", "vm4", "vm5", "vm6"]),
        ("memory>1024", ["vm2", "vm3"]),
        ("memory>=1024", ["vm1", "vm2", "vm3", "vm5", "vm6"]),
        ("memory<1024", ["vm4"]),
        ("memory_mb<=1024", ["vm1", "vm4", "vm5", "vm6"]),
        ("status=in:running|error", ["vm1", "vm2", "vm4"]),
        ("status=not-in:running|error", ["vm3", "vm5", "vm6"]),
        ("name~web*", ["vm1", "vm2", "vm5"]),  # case-insensitive
        ("name~WEB-?", []),  # ? is literal
        ("name~db_1", ["vm3"]),  # _ is literal
        ("error~*100%*", ["vm4"]),  # % is literal
        ("error~*0% f*", ["vm4"]),
        (r'error~"*\**"', ["vm6"]),  # quoted \* is a literal star
        ("error=null", ["vm1", "vm2", "vm3", "vm5"]),
        ("error!=null", ["vm4", "vm6"]),
        ("host_id=null", ["vm4"]),
        ("status=stopped,memory>=2048", ["vm3"]),
        ("created_at>=2024-05-01T14:00:00Z", ["vm3", "vm4", "vm5", "vm6"]),
        ("created_at<=2024-05-01T15:00:00 02:00", ["vm1", "vm2"]),  # '+' decoded as space
        ("created_at<2024-05-01", []),
    ],
)
async def test_each_operator(conn: AsyncConnection, q: str, expected: list[str]) -> None:
    assert await ids(conn, q) == expected
    assert await conn.scalar(count_stmt(VMS, parse_q(q))) == len(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("host.name=h1", ["vm1", "vm5"]),
        ("host.name!=h1", ["vm2", "vm3", "vm4", "vm6"]),  # no host counts as "not h1"
        ("host_id=not-in:h1|h2", ["vm3", "vm4", "vm6"]),
        ("host.name=null", ["vm4"]),
        ("host.enabled=false", ["vm2"]),
        ("host.status=connected,image.name=debian-12", ["vm1", "vm3", "vm5"]),
        ("host.cluster.cpu_overcommit<2.5", ["vm2", "vm3", "vm6"]),
        ("host.cluster.zone.name=beta", ["vm2", "vm3", "vm6"]),
        ("host.cluster.zone.name~ALPHA", ["vm1", "vm5"]),
        ("host.cluster.zone.name!=beta,status=running", ["vm1"]),
    ],
)
async def test_related_fields(conn: AsyncConnection, q: str, expected: list[str]) -> None:
    assert await ids(conn, q) == expected
    assert await conn.scalar(count_stmt(VMS, parse_q(q))) == len(expected)


async def test_other_specs(conn: AsyncConnection) -> None:
    assert await ids(conn, "enabled=true,cluster.zone.name=beta", spec=HOSTS) == ["h3"]
    assert await ids(conn, "cpus_used=0,capacity.memory_mb_used<=0", spec=HOSTS) == [
        "h1",
        "h2",
        "h3",
    ]
    assert await ids(conn, "cpu_overcommit>=2", sort="-cpu_overcommit", spec=CLUSTERS) == [
        "c1",
        "c2",
    ]


async def test_sort_by_related_field_nulls_and_ties(conn: AsyncConnection) -> None:
    # host.name ties (h1: vm1, vm5; h3: vm3, vm6) are broken by id; no host sorts last ascending
    assert await ids(conn, "", sort="host.name") == ["vm1", "vm5", "vm2", "vm3", "vm6", "vm4"]
    assert await ids(conn, "", sort="-host.name") == ["vm4", "vm3", "vm6", "vm2", "vm1", "vm5"]
    assert await ids(conn, "", sort="host.cluster.zone.name,-memory") == [
        "vm1",
        "vm5",
        "vm3",
        "vm2",
        "vm6",
        "vm4",
    ]


async def test_default_sort_is_created_at(conn: AsyncConnection) -> None:
    stmt = apply(select(VmRow.id), VMS, [], [])
    assert list(await conn.scalars(stmt)) == ["vm1", "vm2", "vm3", "vm4", "vm5", "vm6"]


async def test_paging_is_stable_across_ties(conn: AsyncConnection) -> None:
    full = await ids(conn, "", sort="memory")
    assert full == ["vm4", "vm1", "vm5", "vm6", "vm2", "vm3"]
    pages = [await ids(conn, "", sort="memory", limit=2, offset=o) for o in (0, 2, 4)]
    assert [i for page in pages for i in page] == full
    assert await ids(conn, "", sort="memory", limit=2, offset=5) == ["vm3"]


async def test_extra_where_clauses(conn: AsyncConnection) -> None:
    extra: Sequence[ColumnElement[bool]] = [VmRow.cpus == 4]
    assert await ids(conn, "status=stopped", where=extra) == ["vm3"]
    assert await conn.scalar(count_stmt(VMS, parse_q("status=stopped"), where=extra)) == 1


async def test_include_related_columns(conn: AsyncConnection) -> None:
    own, related = split_fields(VMS, ["id", "name", "host.cluster.zone.name", "host.name"])
    assert (own, related) == (["id", "name"], ["host.cluster.zone.name", "host.name"])
    stmt = apply(select(VmRow), VMS, parse_q("memory<=1024"), [], include=related)
    async with AsyncSession(bind=conn, join_transaction_mode="create_savepoint") as s:
        rows = (await s.execute(stmt)).all()
    got = {r[0].id: (r._mapping["host.cluster.zone.name"], r._mapping["host.name"]) for r in rows}
    assert got == {
        "vm1": ("alpha", "h1"),
        "vm4": (None, None),
        "vm5": ("alpha", "h1"),
        "vm6": ("beta", "h3"),
    }


async def test_same_table_joined_twice_is_aliased(conn: AsyncConnection) -> None:
    twice = QuerySpec(
        name="vm",
        table=VmRow,
        fields={"id": VmRow.id, "created_at": VmRow.created_at},
        relations={
            "host": Relation(lambda: HOSTS, VmRow.host_id),
            "pinned": Relation(lambda: HOSTS, VmRow.host_id),
        },
    )
    q = parse_q("host.name=h3,pinned.cluster.name=c3")
    stmt = apply(select(VmRow.id), twice, q, [])
    sql = str(stmt)
    assert "hosts AS q_host " in sql and "hosts AS q_pinned " in sql
    assert list(await conn.scalars(stmt)) == ["vm3", "vm6"]


def refused(q: str = "", sort: str = "", spec: QuerySpec = VMS, **kw: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        apply(select(spec.table), spec, parse_q(q), parse_sort(sort), **kw)
    return info.value


@pytest.mark.parametrize(
    ("q", "field", "words"),
    [
        ("colour=red", "colour", "allowed: cdrom_image_id, cpus, created_at"),
        ("host.colour=red", "host.colour", "host.capacity.cpus_total"),
        ("host=h1", "host", "host.name"),
        ("vnc_password=pw", "vnc_password", "unknown field"),
        ("memory>=lots", "memory", "an integer"),
        ("memory=99999999999999999999", "memory", "an integer"),
        ("status=runing", "status", "one of creating, stopped"),
        ("status=in:running|runing", "status", "one of"),
        ("created_at>=yesterday", "created_at", "ISO-8601"),
        ("host.enabled=maybe", "host.enabled", "true or false"),
        ("host.cluster.cpu_overcommit>nan", "host.cluster.cpu_overcommit", "a number"),
        ("memory~1*", "memory", "text fields only"),
        ("host.enabled>true", "host.enabled", "= and != only"),
    ],
)
def test_bad_conditions_name_the_field(q: str, field: str, words: str) -> None:
    err = refused(q)
    assert err.context["field"] == field
    assert words in err.message


def test_count_refuses_like_apply() -> None:
    with pytest.raises(InvalidInput) as info:
        count_stmt(VMS, parse_q("host.token=x"))
    assert info.value.context["field"] == "host.token"


def test_non_exposed_columns_are_refused() -> None:
    assert refused("token=secret-h1", spec=HOSTS).context["field"] == "token"
    assert refused("cert_pem=null", spec=HOSTS).context["field"] == "cert_pem"
    assert refused("host.token=secret-h1").context["field"] == "host.token"
    assert refused(sort="host.token").context["field"] == "host.token"
    assert refused(sort="claimed").context["field"] == "claimed"
    assert refused(include=["host.token"]).context["field"] == "host.token"
    with pytest.raises(InvalidInput):
        split_fields(VMS, ["host.token"])
    assert "host.token" not in refused("host.x=1").context["allowed"]


def test_spec_mistakes_are_caught_at_construction() -> None:
    with pytest.raises(CorralError, match="not of VmRow"):
        QuerySpec(name="vm", table=VmRow, fields={"id": VmRow.id, "name": HostRow.name})
    with pytest.raises(CorralError, match="not queryable"):
        QuerySpec(name="host", table=HostRow, fields={"id": HostRow.id, "facts": HostRow.facts})
    with pytest.raises(CorralError, match="bad alias"):
        QuerySpec(name="vm", table=VmRow, fields={"id": VmRow.id}, aliases={"x": "nope"})
