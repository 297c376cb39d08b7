"""The iSCSI volume backend against real tgtd targets (one per test, sparse-file LUNs), with and
without CHAP: the LUN inventory (libiscsi in a child process), the checks of ``create``, the
copy of ``create_from``, the zeroing of ``delete``, ``resize``, ``export``, and QEMU opening the
``DiskSource`` the way libvirt hands it over. Every LUN is read back behind the backend's back,
through QEMU's iscsi driver (``iscsi://`` URLs) or straight from the target's backing files."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.agent.storage.iscsi import IscsiBackend
from corral.agent.storage.volumes import real_backends
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput, StorageError
from tests.support.storage import iscsi
from tests.support.storage.daemons import Unavailable, free_port

pytestmark = pytest.mark.storage_servers

GIB = 1 << 30
MIB = 1 << 20
CHAP = ("corral-user", "Chap-Secret-42x")


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def qemu_io(target: iscsi.IscsiTarget, lun: int, *commands: str) -> str:
    """Run qemu-io commands on the LUN (its ``iscsi://`` URL); their output (must succeed)."""
    args = [a for c in commands for a in ("-c", c)]
    done = run("qemu-io", "-f", "raw", *args, target.url(lun))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verification failed" not in done.stdout, done.stdout
    return done.stdout


def allocated(path: Path) -> int:
    """Bytes the backing file really holds (a sparse file's holes are not counted)."""
    return os.stat(path).st_blocks * 512


def thin(target: iscsi.IscsiTarget, lun: int) -> None:
    """Let the LUN thin-provision: tgtd then honours UNMAP (it punches holes in its file)."""
    target.tgtadm(
        *("--mode", "logicalunit", "--op", "update", "--tid", str(iscsi.TID)),
        *("--lun", str(lun), "--params", "thin_provisioning=1"),
    )


@pytest.fixture(params=["plain", "chap"])
def target(request: pytest.FixtureRequest) -> Iterator[iscsi.IscsiTarget]:
    """A target of its own (LUN 1: 64 MiB), open to all or requiring CHAP."""
    if request.param == "plain":
        yield request.getfixturevalue("iscsi_target")
        return
    try:
        iscsi.check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    with iscsi.iscsi_target(chap=CHAP) as chap_target:
        yield chap_target


def pool_of(target: iscsi.IscsiTarget, credentials: str | None = None) -> PoolRef:
    if credentials is None and target.chap is not None:
        credentials = ":".join(target.chap)
    return PoolRef(
        id="pool-iscsi",
        type="iscsi",
        settings={"portal": target.portal, "iqn": target.iqn},
        credentials=credentials,
    )


def volume(target: iscsi.IscsiTarget, lun: int, size_gb: int = 0, **pool: str) -> VolumeRef:
    return VolumeRef(
        volume_id=f"vol-{lun}",
        pool=pool_of(target, **pool),
        name=str(lun),
        size_gb=size_gb,
        format="raw",
    )


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """Where the backend makes its temporary secret files (each call removes its own)."""
    path = tmp_path / "secrets"
    path.mkdir()
    return path


@pytest.fixture
def backend(secrets: Path) -> IscsiBackend:
    return IscsiBackend(tmp_dir=secrets)


def iscsi_json(source: DiskSource, secret_id: str = "sec0") -> str:
    """What libvirt 9.0 gives QEMU for an iscsi ``<disk>`` (with ``<auth>``: a secret object)."""
    iqn, _, lun = source.name.rpartition("/")
    ((host, port),) = source.hosts
    proto: dict[str, object] = {"driver": "iscsi", "transport": "tcp"}
    proto |= {"portal": f"{host}:{port}", "target": iqn, "lun": int(lun)}
    if source.auth is not None:
        proto |= {"user": source.auth.username, "password-secret": secret_id}
    return "json:" + json.dumps({"driver": source.format, "file": proto})


# --- inventory, prepare, usage ---------------------------------------------------------------


async def test_inventory_lists_the_luns_with_their_sizes(
    target: iscsi.IscsiTarget, backend: IscsiBackend, secrets: Path, tmp_path: Path
) -> None:
    target.add_lun(GIB + 4 * MIB)  # 2
    target.add_lun(32 * MIB, lun=7)  # a gap: 3 to 6 do not exist
    target.add_lun(16 * MIB, lun=300)  # flat addressing on the wire (0x4000 | 300)
    pool = pool_of(target)
    expected = [(1, 64 * MIB), (2, GIB + 4 * MIB), (7, 32 * MIB), (300, 16 * MIB)]
    assert await backend.luns(pool) == expected  # LUN 0, tgtd's controller, is not a disk

    await backend.prepare(pool)
    usage = await backend.usage(pool)
    total = sum(size for _, size in expected) / GIB
    assert (usage.total_gb, usage.free_gb) == (pytest.approx(total), pytest.approx(total))

    # QEMU reaches LUN 300 by the source's name, as libvirt hands it over
    source = backend.source(volume(target, 300))
    assert source.name == f"{target.iqn}/{0x4000 | 300}"
    objects = []
    if source.auth is not None:
        secret = tmp_path / "secret"
        secret.write_text(source.auth.secret)
        objects = ["--object", f"secret,id=sec0,file={secret}"]
    info = run("qemu-img", "info", "--output=json", *objects, iscsi_json(source))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["virtual-size"] == 16 * MIB
    assert list(secrets.iterdir()) == []


async def test_source_names_the_lun_and_the_pools_secret(target: iscsi.IscsiTarget) -> None:
    source = IscsiBackend().source(volume(target, 1))
    auth = None
    if target.chap is not None:
        auth = DiskAuth(type="iscsi", username=CHAP[0], secret=CHAP[1], pool_id="pool-iscsi")
    assert source == DiskSource(
        kind="network",
        protocol="iscsi",
        format="raw",
        name=f"{target.iqn}/1",
        hosts=(("127.0.0.1", target.port),),
        auth=auth,
    )
    assert CHAP[1] not in repr(source)
    default_port = pool_of(target).model_copy(
        update={"settings": {"portal": "192.0.2.7", "iqn": target.iqn}}
    )
    ref = volume(target, 1).model_copy(update={"pool": default_port})
    assert IscsiBackend().source(ref).hosts == (("192.0.2.7", 3260),)


def test_real_hosts_have_the_iscsi_backend() -> None:
    pool = PoolRef(id="p", type="iscsi", settings={"portal": "h", "iqn": "iqn.2026-01.org.x:t"})
    assert isinstance(real_backends().for_pool(pool), IscsiBackend)


# --- create, create_from ---------------------------------------------------------------------


async def test_create_checks_the_lun_and_writes_nothing(
    target: iscsi.IscsiTarget, backend: IscsiBackend
) -> None:
    target.add_lun(GIB)  # 2
    qemu_io(target, 2, "write -P 0x5a 0 1M")
    await backend.create(volume(target, 2, size_gb=1))
    qemu_io(target, 2, "read -P 0x5a 0 1M")  # not written

    with pytest.raises(StorageError) as small:
        await backend.create(volume(target, 2, size_gb=2))
    assert small.value.context["reason"] == "too_small"
    assert small.value.context["lun_size_bytes"] == GIB
    assert (small.value.context["pool_id"], small.value.context["volume_id"]) == (
        "pool-iscsi",
        "vol-2",
    )
    with pytest.raises(StorageError) as missing:
        await backend.create(volume(target, 3, size_gb=1))
    assert missing.value.context["reason"] == "not_found"

    qcow2 = volume(target, 2, size_gb=1).model_copy(update={"format": "qcow2"})
    with pytest.raises(InvalidInput):
        await backend.create(qcow2)
    for name in ("abc", "01", "-1", "16384", "1/2"):
        with pytest.raises(InvalidInput):
            await backend.create(volume(target, 2).model_copy(update={"name": name}))


def local_image(path: Path, fmt: str, size: str = "48M") -> Path:
    made = run("qemu-img", "create", "-q", "-f", fmt, str(path), size)
    assert made.returncode == 0, made.stderr
    for command in ("write -P 0x11 0 1M", "write -P 0x22 20M 3M", "write -P 0x33 47M 1M"):
        wrote = run("qemu-io", "-f", fmt, "-c", command, str(path))
        assert wrote.returncode == 0, wrote.stderr
    return path


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_create_from_copies_the_image_into_the_lun(
    target: iscsi.IscsiTarget, backend: IscsiBackend, secrets: Path, tmp_path: Path, fmt: str
) -> None:
    image = local_image(tmp_path / f"image.{fmt}", fmt)
    target.add_lun(GIB)  # 2
    qemu_io(target, 2, "write -P 0x77 10M 1M")  # stale data inside the image's range
    await backend.create_from(volume(target, 2, size_gb=1), image, fmt)
    # the same bytes (and the LUN's zero tail) as the image; the stale data is overwritten
    same = run("qemu-img", "compare", "-f", fmt, "-F", "raw", str(image), target.url(2))
    assert same.returncode == 0, same.stdout + same.stderr
    qemu_io(target, 2, "read -P 0 10M 1M", "read -P 0x22 20M 3M", "read -P 0 48M 16M")
    assert list(secrets.iterdir()) == []


async def test_create_from_checks_the_lun_and_the_image(
    target: iscsi.IscsiTarget, backend: IscsiBackend, tmp_path: Path
) -> None:
    big = local_image(tmp_path / "big.qcow2", "qcow2", size="2G")
    target.add_lun(GIB)  # 2
    with pytest.raises(InvalidInput) as too_big:
        await backend.create_from(volume(target, 2, size_gb=1), big, "qcow2")
    assert too_big.value.context["min_size_gb"] == 2
    with pytest.raises(StorageError) as small:
        await backend.create_from(volume(target, 1, size_gb=1), big, "qcow2")
    assert small.value.context["reason"] == "too_small"
    with pytest.raises(StorageError) as missing:
        await backend.create_from(volume(target, 9, size_gb=1), big, "qcow2")
    assert missing.value.context["reason"] == "not_found"
    with pytest.raises(InvalidInput):
        await backend.create_from(volume(target, 2, size_gb=1), big, "iso")
    qemu_io(target, 2, "read -P 0 0 64M")  # nothing written


async def test_the_secret_never_is_on_a_command_line(
    backend: IscsiBackend, secrets: Path, tmp_path: Path
) -> None:
    """qemu-img and qemu-io get the CHAP secret from a 0600 file, deleted afterwards."""
    try:
        iscsi.check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    log = tmp_path / "argv.log"
    wrappers = {}
    for tool in ("qemu-img", "qemu-io"):
        wrapper = tmp_path / tool
        wrapper.write_text(
            f'#!/bin/sh\nfor f in "$@"; do case "$f" in secret,*) '
            f'file="${{f##*file=}}"; stat -c %a "$file" >> {log};; esac; done\n'
            f'echo "$@" >> {log}\nexec {tool} "$@"\n'
        )
        wrapper.chmod(0o755)
        wrappers[tool] = str(wrapper)
    chap_backend = IscsiBackend(
        qemu_img=wrappers["qemu-img"], qemu_io=wrappers["qemu-io"], tmp_dir=secrets
    )
    image = local_image(tmp_path / "image.qcow2", "qcow2")
    with iscsi.iscsi_target((GIB,), chap=CHAP) as chap_target:
        vol = volume(chap_target, 1, size_gb=1)
        await chap_backend.create_from(vol, image, "qcow2")
        await chap_backend.export(vol, "1", tmp_path / "out.qcow2")
        await chap_backend.delete(vol)
    lines = log.read_text().splitlines()
    commands = [line for line in lines if line != "600"]
    assert [c.split()[0] for c in commands] == ["info", "convert", "convert", "-c"]
    assert all("secret,id=sec0,file=" in c for c in commands[1:])
    assert lines.count("600") == 3  # each secret object read a 0600 file
    assert CHAP[1] not in log.read_text()
    assert list(secrets.iterdir()) == []


# --- delete ----------------------------------------------------------------------------------


async def test_delete_zeroes_the_lun(
    target: iscsi.IscsiTarget, backend: IscsiBackend, secrets: Path
) -> None:
    qemu_io(target, 1, "write -P 0x5a 0 64M")
    assert allocated(target.luns[1]) == 64 * MIB
    vol = volume(target, 1)
    await backend.delete(vol)
    qemu_io(target, 1, "read -P 0 0 64M")
    assert target.luns[1].read_bytes() == bytes(64 * MIB)  # on the target itself
    await backend.delete(vol)  # again: success
    await backend.delete(volume(target, 9))  # a LUN the target does not have: success
    assert list(secrets.iterdir()) == []


async def test_delete_unmaps_a_thin_lun_beyond_2_gib(
    target: iscsi.IscsiTarget, backend: IscsiBackend
) -> None:
    """Zeroing goes in 1 GiB requests (one may not exceed 2 GiB); on a target that can
    thin-provision, the LUN's blocks are unmapped (tgtd punches holes in its file)."""
    lun = target.add_lun(3 * GIB + 8 * MIB)
    thin(target, lun)
    qemu_io(target, lun, "write -P 0x5a 0 4M", "write -P 0x6b 3G 8M")
    assert allocated(target.luns[lun]) >= 12 * MIB
    await backend.delete(volume(target, lun))
    qemu_io(target, lun, "read -P 0 0 4M", "read -P 0 3G 8M")
    assert allocated(target.luns[lun]) < MIB


# --- resize ----------------------------------------------------------------------------------


async def test_resize_cannot_grow_a_lun(target: iscsi.IscsiTarget, backend: IscsiBackend) -> None:
    target.add_lun(2 * GIB)  # 2
    vol = volume(target, 2, size_gb=1)
    await backend.resize(vol, 1)
    await backend.resize(vol, 2)  # the LUN is already that big
    with pytest.raises(InvalidInput) as grow:
        await backend.resize(vol, 3)
    assert grow.value.context["reason"] == "lun_size"
    assert grow.value.context["lun_size_bytes"] == 2 * GIB
    with pytest.raises(StorageError) as missing:
        await backend.resize(volume(target, 4), 1)
    assert missing.value.context["reason"] == "not_found"


# --- export ----------------------------------------------------------------------------------


async def test_export_writes_a_standalone_qcow2_equal_to_the_lun(
    target: iscsi.IscsiTarget, backend: IscsiBackend, tmp_path: Path
) -> None:
    qemu_io(target, 1, "write -P 0x42 0 2M", "write -P 0x43 50M 1M")
    dest = tmp_path / "export.qcow2"
    dest.write_text("old")  # replaced
    await backend.export(volume(target, 1), "1", dest)
    info = json.loads(run("qemu-img", "info", "--output=json", str(dest)).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert info["virtual-size"] == 64 * MIB
    same = run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(dest), target.url(1))
    assert same.returncode == 0, same.stdout + same.stderr
    assert dest.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.qcow2", "secrets"]

    with pytest.raises(StorageError) as missing:
        await backend.export(volume(target, 1), "5", dest)
    assert missing.value.context["reason"] == "not_found"
    assert not dest.exists() and not dest.with_name("export.qcow2.part").exists()
    with pytest.raises(InvalidInput):
        await backend.export(volume(target, 1), "../etc", dest)


async def test_snapshots_are_refused(target: iscsi.IscsiTarget, backend: IscsiBackend) -> None:
    vol = volume(target, 1)
    for call in (
        backend.create_overlay(vol, "2", "1"),
        backend.rebase(vol, "1", None),
        backend.delete_file(vol, "1"),
        backend.backing_of(vol, "1"),
    ):
        with pytest.raises(InvalidInput):
            await call


# --- failures --------------------------------------------------------------------------------


async def test_a_wrong_chap_secret_is_a_storage_error_without_the_secret(
    backend: IscsiBackend, secrets: Path, tmp_path: Path
) -> None:
    try:
        iscsi.check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    wrong = "Wrong-Secret-99z"
    image = local_image(tmp_path / "image.qcow2", "qcow2")
    with iscsi.iscsi_target((GIB,), chap=CHAP) as chap_target:
        qemu_io(chap_target, 1, "write -P 0x5a 0 1M")
        vol = volume(chap_target, 1, size_gb=1, credentials=f"{CHAP[0]}:{wrong}")
        calls = [
            backend.prepare(vol.pool),
            backend.usage(vol.pool),
            backend.create(vol),
            backend.create_from(vol, image, "qcow2"),
            backend.delete(vol),
            backend.resize(vol, 1),
            backend.export(vol, "1", tmp_path / "out.qcow2"),
        ]
        for call in calls:
            with pytest.raises(StorageError) as err:
                await call
            shown = str(err.value) + repr(err.value.context)
            assert wrong not in shown and CHAP[1] not in shown
            assert err.value.context["reason"] == "auth"
            assert err.value.context["pool_id"] == "pool-iscsi"
        # no credentials for a target that wants CHAP
        with pytest.raises(StorageError) as none:
            await backend.prepare(pool_of(chap_target).model_copy(update={"credentials": None}))
        assert none.value.context["reason"] == "auth"
        qemu_io(chap_target, 1, "read -P 0x5a 0 1M")  # untouched
    for bad in ("no-colon", ":secret", "user:"):
        with pytest.raises(InvalidInput) as invalid:
            await backend.prepare(pool_of(chap_target, credentials=bad))
        assert "secret" not in repr(invalid.value.context)
    assert not (tmp_path / "out.qcow2").exists()
    assert list(secrets.iterdir()) == []


async def test_unreachable_portals_and_unknown_targets(
    iscsi_target: iscsi.IscsiTarget, backend: IscsiBackend
) -> None:
    closed = pool_of(iscsi_target).model_copy(
        update={"settings": {"portal": f"127.0.0.1:{free_port()}", "iqn": iscsi_target.iqn}}
    )
    with pytest.raises(StorageError) as refused:
        await backend.prepare(closed)
    assert refused.value.context["reason"] == "unreachable"
    assert refused.value.context["pool_id"] == "pool-iscsi"

    unknown = pool_of(iscsi_target).model_copy(
        update={"settings": {"portal": iscsi_target.portal, "iqn": "iqn.2026-01.org.corral:none"}}
    )
    with pytest.raises(StorageError) as missing:
        await backend.usage(unknown)
    assert missing.value.context["reason"] == "not_found"
    assert "cannot get the usage of pool pool-iscsi" in missing.value.message


async def test_a_silent_portal_times_out(backend: IscsiBackend) -> None:
    """A portal that accepts the connection and never answers: the inventory is killed."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        port = server.getsockname()[1]
        pool = PoolRef(
            id="pool-iscsi",
            type="iscsi",
            settings={"portal": f"127.0.0.1:{port}", "iqn": "iqn.2026-01.org.corral:t"},
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(StorageError) as err:
            await IscsiBackend(timeout=2).prepare(pool)
        assert asyncio.get_running_loop().time() - started < 10
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
    assert err.value.context["reason"] in ("timeout", "unreachable")
    assert err.value.context["pool_id"] == "pool-iscsi"
