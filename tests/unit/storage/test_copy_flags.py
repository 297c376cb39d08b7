"""Durable copies use direct I/O where the file system takes ``O_DIRECT`` (the copy is on disk
when qemu-img ends) and a cached copy elsewhere."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from corral.agent.storage import qemu_img
from corral.agent.storage.qemu_img import copy_flags, direct_io


def test_direct_io_on_a_disk_file_system(tmp_path: Path) -> None:
    qemu_img._DIRECT.pop(tmp_path, None)
    if not direct_io(tmp_path):
        pytest.skip(f"{tmp_path} takes no O_DIRECT here")
    assert copy_flags(tmp_path / "x.qcow2") == ("-t", "none", "-W", "-m", "16")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing


def test_no_direct_io_where_the_file_system_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, mode)

    monkeypatch.setattr(qemu_img.os, "open", refuse_direct)
    qemu_img._DIRECT.pop(tmp_path, None)
    assert not direct_io(tmp_path)
    assert copy_flags(tmp_path / "x.qcow2") == ()
    assert list(tmp_path.iterdir()) == []
    qemu_img._DIRECT.pop(tmp_path, None)
