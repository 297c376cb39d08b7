"""Secrets at rest: sealing round trip, context binding, tampering, the master key file, rotation."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from corral.api.errors import CorralError
from corral.server.secretbox import (
    ENV_VAR,
    MasterKey,
    SecretBox,
    add_master_key,
    load_master_keys,
)

CONTEXT = "host:42:bmc_password"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(MasterKey.generate())


@pytest.mark.parametrize("plaintext", ["hunter2", "", "pässwörd ✓ " * 50])
def test_round_trip(box: SecretBox, plaintext: str) -> None:
    token = box.seal(plaintext, CONTEXT)
    assert token.startswith(f"cs1.{box.current.key_id}.")
    assert plaintext.encode() not in token.encode() or not plaintext
    assert box.open(token, CONTEXT) == plaintext


def test_sealing_twice_gives_different_tokens(box: SecretBox) -> None:
    assert box.seal("same", CONTEXT) != box.seal("same", CONTEXT)


def test_wrong_context_fails(box: SecretBox) -> None:
    token = box.seal("hunter2", CONTEXT)
    with pytest.raises(CorralError, match="does not open") as info:
        box.open(token, "host:43:bmc_password")
    assert "hunter2" not in str(info.value)
    assert info.value.http_status == 500


@pytest.mark.parametrize("position", [0, 10, -1])
def test_tampered_ciphertext_fails(box: SecretBox, position: int) -> None:
    token = box.seal("hunter2", CONTEXT)
    prefix, payload = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[position] ^= 0x01
    forged = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(CorralError, match="does not open"):
        box.open(forged, CONTEXT)


@pytest.mark.parametrize("token", ["hunter2", "cs1.zz.abc", "cs2.00000000.abcd", "cs1.0123abcd.a"])
def test_malformed_or_unknown_tokens_fail(box: SecretBox, token: str) -> None:
    with pytest.raises(CorralError):
        box.open(token, CONTEXT)


def test_wrong_key_fails(box: SecretBox) -> None:
    token = box.seal("hunter2", CONTEXT)
    with pytest.raises(CorralError, match="not loaded"):
        SecretBox(MasterKey.generate()).open(token, CONTEXT)


def test_key_id_cannot_be_swapped() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    box = SecretBox([old, new])
    token = box.seal("hunter2", CONTEXT)
    moved = token.replace(new.key_id, old.key_id)
    with pytest.raises(CorralError, match="does not open"):
        box.open(moved, CONTEXT)


def test_empty_context_is_refused(box: SecretBox) -> None:
    with pytest.raises(CorralError, match="context"):
        box.seal("x", "")


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_master_keys(data_dir=data_dir, environ={})
    path = data_dir / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 1
    second = load_master_keys(data_dir=data_dir, environ={})
    assert second == first
    token = SecretBox(first).seal("hunter2", CONTEXT)
    assert SecretBox(second).open(token, CONTEXT) == "hunter2"
    assert not [p for p in data_dir.iterdir() if p.name != "master.key"]  # no temp files left


def test_key_file_created_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_master_keys(data_dir=tmp_path, environ={})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_loose_key_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "k"
    path.write_text(MasterKey.generate().to_b64() + "\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "corral.server.secretbox"):
        load_master_keys(data_dir=tmp_path, path=path, environ={})
    assert "accessible to group/others" in caplog.text


def test_env_key_wins_over_file(tmp_path: Path) -> None:
    key = MasterKey.generate()
    keys = load_master_keys(data_dir=tmp_path, environ={ENV_VAR: key.to_b64()})
    assert keys == [key]
    assert not (tmp_path / "master.key").exists()
    urlsafe = base64.urlsafe_b64encode(key.material).decode()
    assert load_master_keys(data_dir=tmp_path, environ={ENV_VAR: urlsafe}) == [key]


@pytest.mark.parametrize("content", ["", "# only a comment\n", "not base64!\n", "AAAA\n"])
def test_bad_key_material_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "master.key"
    path.write_text(content)
    with pytest.raises(CorralError):
        load_master_keys(data_dir=tmp_path, environ={})
    with pytest.raises(CorralError):
        load_master_keys(data_dir=tmp_path, environ={ENV_VAR: content or "x"})


def test_unreadable_key_file_is_a_corral_error(tmp_path: Path) -> None:
    (tmp_path / "master.key").mkdir()
    with pytest.raises(CorralError, match="cannot read master key file"):
        load_master_keys(data_dir=tmp_path, environ={})


def test_rotation(tmp_path: Path) -> None:
    before = load_master_keys(data_dir=tmp_path, environ={})
    old_box = SecretBox(before)
    old_token = old_box.seal("hunter2", CONTEXT)
    new_key = add_master_key(tmp_path / "master.key")
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    after = load_master_keys(data_dir=tmp_path, environ={})
    assert after == [*before, new_key]
    box = SecretBox(after)
    assert box.current == new_key
    assert box.open(old_token, CONTEXT) == "hunter2"  # old tokens still open
    assert box.needs_reseal(old_token)
    new_token = box.reseal(old_token, CONTEXT)
    assert new_token.startswith(f"cs1.{new_key.key_id}.")
    assert not box.needs_reseal(new_token)
    assert box.open(new_token, CONTEXT) == "hunter2"
    with pytest.raises(CorralError, match="not loaded"):
        old_box.open(new_token, CONTEXT)


def test_key_material_never_shown(box: SecretBox) -> None:
    key = box.current
    assert key.to_b64() not in repr(key) and key.to_b64() not in repr(box)
    assert SecretBox.is_sealed(box.seal("x", CONTEXT))
    assert not SecretBox.is_sealed("hunter2")


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(CorralError, match="32 bytes"):
        MasterKey(b"short")
    with pytest.raises(CorralError, match="at least one"):
        SecretBox([])
