"""Secrets at rest: AES-256-GCM sealing under a master key kept outside the database, with rotation.

A sealed secret is a plain string ``cs1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`` stored in
an ordinary column. The associated data binds it to a caller-given ``context`` such as
``"host:<id>:bmc_password"``: a token copied to another row or field does not open. Master keys
are 32 random bytes; their id is derived from the key (8 hex). Keys come from
``$CORRAL_MASTER_KEY`` (base64, several separated by commas, newest last) or else from a key file
(one base64 key a line, newest last; created 0600 at first use, ``<data dir>/master.key`` by
default). ``seal`` uses the newest key, ``open`` the key named in the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from corral.api.errors import CorralError

log = logging.getLogger(__name__)

ENV_VAR = "CORRAL_MASTER_KEY"
KEY_FILE_NAME = "master.key"
VERSION = "cs1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TOKEN = re.compile(r"cs1\.([0-9a-f]{8})\.([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class MasterKey:
    """One AES-256 master key; ``key_id`` is derived from the material (never shown in repr)."""

    material: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.material) != _KEY_BYTES:
            raise CorralError(f"a master key is {_KEY_BYTES} bytes, not {len(self.material)}")
        digest = hashlib.sha256(b"corral-master-key-id\0" + self.material).hexdigest()
        object.__setattr__(self, "key_id", digest[:8])

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key."""
        return cls(secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def from_b64(cls, text: str) -> MasterKey:
        """A key from its base64 form (standard or url-safe alphabet)."""
        try:
            material = base64.b64decode(
                text.strip().replace("-", "+").replace("_", "/"), validate=True
            )
        except (binascii.Error, ValueError) as exc:
            raise CorralError("a master key is not valid base64") from exc
        return cls(material)

    def to_b64(self) -> str:
        """The key in base64 (what the key file and ``$CORRAL_MASTER_KEY`` hold)."""
        return base64.b64encode(self.material).decode()


def _parse_keys(text: str, origin: str) -> list[MasterKey]:
    lines = [line.strip() for line in re.split(r"[\n,]", text)]
    keys = [MasterKey.from_b64(line) for line in lines if line and not line.startswith("#")]
    if not keys:
        raise CorralError(f"no master key in {origin}", origin=origin)
    return keys


def _write_file(path: Path, content: str, *, replace: bool) -> bool:
    """Write ``path`` (0600) atomically; unless ``replace``, ``False`` if it exists already."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
            return True
        os.link(tmp, path)  # fails if another process created the file first
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def key_file_path(data_dir: Path) -> Path:
    """The default key file of a data directory."""
    return Path(data_dir) / KEY_FILE_NAME


def load_master_keys(
    *, data_dir: Path, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> list[MasterKey]:
    """The master keys, oldest first; the key file is created (0600) with one new key if missing.

    ``$CORRAL_MASTER_KEY`` wins over the file; ``path`` defaults to ``<data_dir>/master.key``. A key
    file readable by group or others is used but logged as a warning. Raises ``CorralError`` when
    the file cannot be read or holds no valid key.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return _parse_keys(env[ENV_VAR], f"${ENV_VAR}")
    path = key_file_path(data_dir) if path is None else Path(path)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if _write_file(path, MasterKey.generate().to_b64() + "\n", replace=False):
                log.info("created master key file %s", path)
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise CorralError(
            f"cannot read master key file {path}: {exc.strerror}", path=str(path)
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "master key file %s is accessible to group/others (mode %o)", path, mode & 0o777
        )
    return _parse_keys(text, str(path))


def add_master_key(path: Path) -> MasterKey:
    """Rotation, step 1: append a new key to the key file (kept 0600); it seals from now on.

    Restart (or rebuild the ``SecretBox``), then ``reseal`` every stored secret; once none
    ``needs_reseal``, old keys may be deleted from the file.
    """
    key = MasterKey.generate()
    try:
        existing = path.read_text() if path.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        _write_file(path, existing + key.to_b64() + "\n", replace=True)
    except OSError as exc:
        raise CorralError(
            f"cannot write master key file {path}: {exc.strerror}", path=str(path)
        ) from exc
    return key


class SecretBox:
    """Seals and opens secrets (``str``) bound to a context string.

    Errors: ``open`` raises ``CorralError`` (500) when the token is malformed, was sealed by a key
    that is not loaded, or fails authentication (tampered, wrong key, wrong context). Messages
    never include the plaintext or key material.
    """

    def __init__(self, keys: MasterKey | Sequence[MasterKey]) -> None:
        ring = [keys] if isinstance(keys, MasterKey) else list(keys)
        if not ring:
            raise CorralError("a SecretBox needs at least one master key")
        self._keys = {key.key_id: key for key in ring}
        self.current = ring[-1]

    @staticmethod
    def _aad(key_id: str, context: str) -> bytes:
        if not context:
            raise CorralError("a secret must be sealed with a non-empty context")
        return f"corral-secretbox/{VERSION}\0{key_id}\0{context}".encode()

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext`` with the newest key, bound to ``context``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        key_id = self.current.key_id
        sealed = AESGCM(self.current.material).encrypt(
            nonce, plaintext.encode(), self._aad(key_id, context)
        )
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{key_id}.{payload}"

    def open(self, token: str, context: str) -> str:
        """The plaintext sealed in ``token`` for ``context``."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise CorralError("not a sealed secret (expected cs1.<key id>.<data>)", context=context)
        key_id, payload = match[1], match[2]
        key = self._keys.get(key_id)
        if key is None:
            raise CorralError(
                f"secret sealed with master key {key_id}, which is not loaded",
                context=context,
                key_id=key_id,
            )
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            opened = AESGCM(key.material).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._aad(key_id, context)
            )
            return opened.decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise CorralError(
                "sealed secret does not open: tampered, or sealed for another context",
                context=context,
                key_id=key_id,
            ) from exc

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` looks like a sealed token (to migrate plaintext columns)."""
        return _TOKEN.fullmatch(value) is not None

    def needs_reseal(self, token: str) -> bool:
        """Whether ``token`` was sealed by a key other than the newest."""
        match = _TOKEN.fullmatch(token)
        return match is None or match[1] != self.current.key_id

    def reseal(self, token: str, context: str) -> str:
        """``token`` opened and sealed again with the newest key (rotation, step 2)."""
        return self.seal(self.open(token, context), context)

    def __repr__(self) -> str:
        return f"<SecretBox current={self.current.key_id} keys={len(self._keys)}>"
