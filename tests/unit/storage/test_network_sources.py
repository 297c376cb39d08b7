"""The NFS and RBD backends without servers: sources, URLs, settings checks, and how the cephx
key reaches the rbd CLI (a 0600 keyfile, never argv)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend, parse_monitor
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput, StorageError

KEY = "AQB9gxBrkSvCEBAA8l/TroLU3+zYMO1zssMOQg=="


def rbd_volume(
    monitors: list[str],
    credentials: str | None = KEY,
    name: str = "vol-v1",
    fmt: Literal["qcow2", "raw"] = "raw",
) -> VolumeRef:
    pool = PoolRef(
        id="p1",
        type="rbd",
        settings={"monitors": monitors, "pool": "vms", "user": "corral"},
        credentials=credentials,
    )
    return VolumeRef(volume_id="v1", pool=pool, name=name, size_gb=3, format=fmt)


def nfs_volume(server: str, export: str, name: str = "vol-v1.qcow2") -> VolumeRef:
    pool = PoolRef(id="p2", type="nfs", settings={"server": server, "export": export})
    return VolumeRef(volume_id="v1", pool=pool, name=name, size_gb=1)


@pytest.mark.parametrize(
    ("monitor", "parsed"),
    [
        ("mon1", ("mon1", 6789)),
        ("mon1:3300", ("mon1", 3300)),
        ("10.0.0.1:6790", ("10.0.0.1", 6790)),
        ("[fd00::1]", ("fd00::1", 6789)),
        ("[fd00::1]:3300", ("fd00::1", 3300)),
    ],
)
def test_monitors_parse_with_the_default_port(monitor: str, parsed: tuple[str, int]) -> None:
    assert parse_monitor(monitor) == parsed


def test_rbd_source() -> None:
    source = RbdBackend().source(rbd_volume(["mon1", "[fd00::2]:3300"]))
    assert source == DiskSource(
        kind="network",
        protocol="rbd",
        name="vms/vol-v1",
        hosts=(("mon1", 6789), ("fd00::2", 3300)),
        format="raw",
        auth=DiskAuth(type="ceph", username="corral", secret=KEY, pool_id="p1"),
    )
    assert KEY not in repr(source)


@pytest.mark.parametrize(
    "volume",
    [
        rbd_volume(["mon1"], credentials=None),
        rbd_volume(["mon1"], name="a/b"),
        rbd_volume(["mon1"], name="a@snap"),
        rbd_volume(["mon1"], fmt="qcow2"),
        rbd_volume([]),
    ],
)
async def test_unusable_rbd_volumes_are_refused(volume: VolumeRef, tmp_path: Path) -> None:
    backend = RbdBackend(rbd=str(tmp_path / "never-run"), tmp_dir=tmp_path)
    with pytest.raises(InvalidInput) as err:
        await backend.create(volume)
    assert err.value.context["pool_id"] == "p1"
    with pytest.raises(InvalidInput):
        backend.source(volume)
    assert list(tmp_path.iterdir()) == []


async def test_the_key_goes_in_a_private_keyfile_never_on_the_command_line(
    tmp_path: Path,
) -> None:
    """A fake rbd records its arguments and what its keyfile holds, then answers like rbd
    for an absent image and a successful create."""
    record = tmp_path / "calls.jsonl"
    fake = tmp_path / "rbd"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, stat, sys\n"
        "args = sys.argv[1:]\n"
        "key = args[args.index('--keyfile') + 1]\n"
        "conf = args[args.index('-c') + 1]\n"
        "entry = {'args': args, 'key': open(key).read(), 'conf': open(conf).read(),\n"
        "         'mode': stat.S_IMODE(os.stat(key).st_mode),\n"
        "         'dir_mode': stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode)}\n"
        f"open({str(record)!r}, 'a').write(json.dumps(entry) + '\\n')\n"
        "if 'info' in args:\n"
        "    print('rbd: error opening image vol-v1: (2) No such file or directory',"
        " file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    fake.chmod(0o755)
    keys = tmp_path / "keys"
    keys.mkdir()
    backend = RbdBackend(rbd=str(fake), tmp_dir=keys, connect_timeout=7)
    await backend.create(rbd_volume(["mon1", "[fd00::2]:3300"]))
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["args"][c["args"].index("7") + 1] for c in calls] == ["info", "create"]
    for call in calls:
        assert KEY not in " ".join(call["args"])
        assert (call["key"], call["conf"], call["mode"], call["dir_mode"]) == (
            KEY,
            "",
            0o600,
            0o700,
        )
        args = call["args"]
        assert args[args.index("-m") + 1] == "mon1:6789,[fd00::2]:3300"
        assert args[args.index("--id") + 1] == "corral"
    assert calls[1]["args"][-3:] == ["--size", "3072", "vms/vol-v1"]
    assert list(keys.iterdir()) == []


async def test_a_failing_rbd_reports_its_own_message(tmp_path: Path) -> None:
    fake = tmp_path / "rbd"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '2026-12-02T20:46:21.360+0000 7f18400b9380 -1 some log noise' >&2\n"
        "echo 'rbd: error opening pool vms: (2) No such file or directory' >&2\n"
        "exit 5\n"
    )
    fake.chmod(0o755)
    with pytest.raises(StorageError) as err:
        await RbdBackend(rbd=str(fake), tmp_dir=tmp_path).resize(rbd_volume(["mon1"]), 5)
    assert err.value.message == (
        "cannot resize volume v1: rbd info failed: rbd: error opening pool vms: (2) No such file"
        " or directory"
    )
    assert (err.value.context["pool_id"], err.value.context["returncode"]) == ("p1", 5)


def test_nfs_source_and_url() -> None:
    backend = NfsBackend()
    vol = nfs_volume("nfs1.example.com", "/srv/vms/")
    assert backend.source(vol) == DiskSource(
        kind="network",
        protocol="nfs",
        name="/srv/vms/corral-volumes/vol-v1.qcow2",
        hosts=(("nfs1.example.com", 2049),),
        format="qcow2",
    )
    assert backend.url(vol) == (
        "nfs://nfs1.example.com/srv/vms/corral-volumes/vol-v1.qcow2?uid=0&gid=0"
    )
    v6 = nfs_volume("[fd00::5]", "/")
    assert backend.source(v6).name == "/corral-volumes/vol-v1.qcow2"
    assert backend.source(v6).hosts == (("fd00::5", 2049),)
    assert backend.url(v6).startswith("nfs://[fd00::5]/corral-volumes/vol-v1.qcow2?")


@pytest.mark.parametrize("name", ["../x.qcow2", "a/b", ".x", "v.qcow2.part"])
async def test_unsafe_nfs_names_are_refused(name: str, tmp_path: Path) -> None:
    backend = NfsBackend(python=str(tmp_path / "never-run"), qemu_img=str(tmp_path / "never"))
    vol = nfs_volume("nfs1", "/srv", name)
    for call in (backend.create(vol), backend.delete(vol), backend.resize(vol, 2)):
        with pytest.raises(InvalidInput):
            await call
    with pytest.raises(InvalidInput):
        backend.source(vol)


def test_unusable_nfs_settings_are_refused() -> None:
    vol = nfs_volume("nfs1", "relative/export")
    with pytest.raises(InvalidInput) as err:
        NfsBackend().source(vol)
    assert err.value.context["pool_id"] == "p2"
