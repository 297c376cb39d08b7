"""The storage servers of tests/support/storage are usable by QEMU's network block drivers, and
leave nothing behind (processes, directories, /dev/null) even when the code using them fails.

The NFS tear-down test has its own module (test_nfs_teardown.py): no other NFS server may run
meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.storage import iscsi
from tests.support.storage.ceph import CephCluster
from tests.support.storage.daemons import dev_null_intact, port_open
from tests.support.storage.iscsi import MIB, IscsiTarget
from tests.support.storage.nfs import NfsExport

pytestmark = pytest.mark.storage_servers


def qemu(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}{done.stdout}"
    return done.stdout


def info(filename: str, fmt: str | None = None) -> dict[str, object]:
    opts = ["-f", fmt] if fmt else []
    data: dict[str, object] = json.loads(qemu("qemu-img", "info", "--output=json", *opts, filename))
    return data


def write_then_read(filename: str, fmt: str, pattern: int, offset: int = 0) -> None:
    """qemu-io writes 1 MiB of ``pattern`` at ``offset`` and reads it back (-P checks it)."""
    out = qemu(
        *("qemu-io", "-f", fmt),
        *("-c", f"write -P {pattern} {offset} 1M", "-c", f"read -P {pattern} {offset} 1M"),
        filename,
    )
    assert "Pattern verification failed" not in out, out


def reads_back(filename: str, fmt: str, pattern: int, offset: int = 0) -> bool:
    done = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"read -P {pattern} {offset} 1M", filename],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (zombies count as gone: PID 1 here does not reap)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- tear-down -----------------------------------------------------------------------------


def test_iscsi_target_is_gone_after_a_failure() -> None:
    with pytest.raises(RuntimeError), iscsi.iscsi_target() as target:
        pid = target.pid
        assert port_open(target.port)
        raise RuntimeError("test failed")
    assert gone(pid)
    assert not port_open(target.port)
    assert not target.directory.exists()
    assert not (iscsi.SOCKETS / f"socket.{target.control_port}").exists()


def test_a_killed_test_process_takes_its_daemons_along() -> None:
    """SIGKILL of the process that started a server (pytest killed by a timeout, say): the
    kernel stops the daemons (parent death signal)."""
    script = (
        "import os, signal, sys\n"
        "from tests.support.storage.iscsi import iscsi_target\n"
        "with iscsi_target() as t:\n"
        "    print(t.pid, t.directory, t.control_port, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[3],
    )
    assert done.returncode == -9, done.stderr
    pid, directory, control = done.stdout.split()
    try:
        assert wait_gone(int(pid)), "tgtd outlived the process that started it"
        # what remains (no tear-down ran) is the management socket, removed at the next start
        socket = iscsi.SOCKETS / f"socket.{control}"
        assert socket.exists()
        # the kernel drops the dead tgtd's lock as it reaps the process: allow it a moment
        deadline = time.monotonic() + 10
        while socket not in iscsi.remove_stale_sockets() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not socket.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- NFS -----------------------------------------------------------------------------------


def test_qemu_creates_and_uses_a_qcow2_over_nfs(nfs_dir: NfsExport) -> None:
    url = nfs_dir.url("x.qcow2")
    qemu("qemu-img", "create", "-q", "-f", "qcow2", url, "64M")
    remote = info(url)
    assert remote["format"] == "qcow2"
    assert remote["virtual-size"] == 64 * MIB
    write_then_read(url, "qcow2", 0xAB, offset=MIB)
    # the data is in the exported directory, where QEMU reads it back as a local file too
    assert nfs_dir.local("x.qcow2").is_file()
    assert reads_back(str(nfs_dir.local("x.qcow2")), "qcow2", 0xAB, offset=MIB)
    assert not reads_back(url, "qcow2", 0xCD, offset=MIB)


def test_each_nfs_dir_is_its_own_mountable_export(nfs_dir: NfsExport) -> None:
    assert list(nfs_dir.directory.iterdir()) == []
    qemu("qemu-img", "create", "-q", "-f", "raw", nfs_dir.url("r.img"), "1M")
    assert nfs_dir.local("r.img").stat().st_size == MIB
    assert nfs_dir.directory.parent.name == "export"


# --- iSCSI ---------------------------------------------------------------------------------


def test_qemu_reads_and_writes_an_iscsi_lun(iscsi_target: IscsiTarget) -> None:
    url = iscsi_target.url(1)
    lun = info(url)
    assert lun["format"] == "raw"
    assert lun["virtual-size"] == 64 * MIB
    write_then_read(url, "raw", 0x5A, offset=2 * MIB)
    with iscsi_target.luns[1].open("rb") as f:  # the LUN's backing file got the bytes
        f.seek(2 * MIB)
        assert f.read(MIB) == b"\x5a" * MIB


def test_luns_can_be_added_and_removed_at_runtime(iscsi_target: IscsiTarget) -> None:
    assert iscsi_target.add_lun(32 * MIB) == 2
    assert info(iscsi_target.url(2))["virtual-size"] == 32 * MIB
    qemu("qemu-img", "create", "-q", "-f", "qcow2", iscsi_target.url(2), "16M")
    assert info(iscsi_target.url(2))["format"] == "qcow2"
    backing = iscsi_target.luns[2]
    iscsi_target.remove_lun(2)
    assert not backing.exists()
    assert "LUN: 2" not in iscsi_target.show()


def test_a_chap_target_needs_the_credentials() -> None:
    with iscsi.iscsi_target([8 * MIB], chap=("corral", "s3cret-pass12")) as target:
        assert info(target.url(1))["virtual-size"] == 8 * MIB
        anonymous = target.url(1).replace("corral%s3cret-pass12@", "")
        done = subprocess.run(["qemu-img", "info", anonymous], capture_output=True, timeout=60)
        assert done.returncode != 0


# --- Ceph RBD ------------------------------------------------------------------------------


def test_qemu_creates_and_uses_an_rbd_image(ceph_cluster: CephCluster) -> None:
    image = f"t-{os.urandom(4).hex()}"
    filename = ceph_cluster.qemu_filename(image)
    qemu("qemu-img", "create", "-q", "-f", "raw", filename, "64M")
    try:
        assert image in ceph_cluster.rbd("ls", ceph_cluster.pool).split()
        described = json.loads(
            ceph_cluster.rbd("info", f"{ceph_cluster.pool}/{image}", "--format", "json")
        )
        assert described["size"] == 64 * MIB
        assert info(filename, "raw")["virtual-size"] == 64 * MIB
        write_then_read(filename, "raw", 0x11, offset=4 * MIB)
        assert not reads_back(filename, "raw", 0x22, offset=4 * MIB)
    finally:
        ceph_cluster.rbd("rm", "--no-progress", f"{ceph_cluster.pool}/{image}")
    assert image not in ceph_cluster.rbd("ls", ceph_cluster.pool).split()


def test_the_client_key_is_what_libvirt_needs(ceph_cluster: CephCluster) -> None:
    """The key, keyring and caps given to libvirt agree with the cluster, and are limited to
    the pool."""
    caps = json.loads(
        ceph_cluster.ceph("auth", "get", f"client.{ceph_cluster.client}", "-f", "json")
    )
    assert caps[0]["key"] == ceph_cluster.key
    assert caps[0]["caps"]["osd"] == f"profile rbd pool={ceph_cluster.pool}"
    assert ceph_cluster.key in ceph_cluster.keyring.read_text()
    client = ["--id", ceph_cluster.client, "--keyring", str(ceph_cluster.keyring)]
    client += ["-m", ceph_cluster.mon_host]
    listed = subprocess.run(["rbd", *client, "ls", ceph_cluster.pool], capture_output=True)
    assert listed.returncode == 0, listed.stderr
    ceph_cli = ["ceph", "-c", str(ceph_cluster.conf), *client]  # the CLI wants a config file
    admin_only = subprocess.run([*ceph_cli, "auth", "ls"], capture_output=True, timeout=60)
    assert admin_only.returncode != 0
    assert b"denied" in admin_only.stderr


def test_ceph_never_touches_dev_null(ceph_cluster: CephCluster) -> None:
    assert dev_null_intact()
    conf = ceph_cluster.conf.read_text()
    assert "/dev/null" not in conf
    sockets = list((ceph_cluster.directory / "run").glob("*.asok"))
    assert {s.name.split(".")[0] for s in sockets} >= {"mon", "mgr", "osd"}


def test_report_startup_times(
    nfs_export: NfsExport, ceph_cluster: CephCluster, iscsi_target: IscsiTarget
) -> None:
    """Not a check: prints how long each server took to start (``pytest -s`` shows it)."""
    print(
        f"\nstart-up: nfs {nfs_export.startup_s:.2f} s, iscsi {iscsi_target.startup_s:.3f} s, "
        f"ceph {ceph_cluster.startup_s:.2f} s"
    )
    assert 0 < ceph_cluster.startup_s < 120
