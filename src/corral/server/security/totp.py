"""TOTP two-factor authentication (RFC 6238): secrets, otpauth URIs, QR codes, recovery codes.

Codes are 6 digits, SHA-1, 30 s steps: what every authenticator app supports by default. ``verify``
accepts the current step and one step either side (clock drift) and returns the matched step; the
caller stores it as ``last_used_step`` so the same code (or an older one) cannot be replayed.

Recovery codes are one-time codes for a lost device: 12 random base32 characters (60 bits),
shown as ``xxxx-xxxx-xxxx``. They are stored as salted SHA-256, not argon2: a slow hash protects
*guessable* secrets, and these are not guessable. An attacker holding a stolen hash list and a
GPU doing 10^10 SHA-256/s still needs 2^60 / 10 codes / 10^10/s ~ 130 days per user to find
one of that user's 10 codes (the salt, e.g. the user id, stops one search from covering every
user), and a recovery code is only a second factor: the password is still argon2-protected.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import time
from collections.abc import Sequence
from hmac import compare_digest

import pyotp
import segno

from corral.api.errors import CorralError, InvalidInput

INTERVAL_S = 30
DIGITS = 6
DRIFT_STEPS = 1
"""Steps accepted either side of the current one."""

_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A new random TOTP secret: 32 base32 characters (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32()


def _totp(secret: str) -> pyotp.TOTP:
    try:
        return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_S)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise CorralError("the stored TOTP secret is invalid") from exc


def provisioning_uri(secret: str, account: str, issuer: str = "Corral") -> str:
    """The ``otpauth://totp/<issuer>:<account>?secret=…&issuer=…`` URI authenticator apps enrol
    from (as a QR code); it contains the secret: show it once, never log it."""
    if not account.strip():
        raise InvalidInput("the TOTP account name is empty")
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def _qr(uri: str) -> segno.QRCode:
    return segno.make_qr(uri, error="m")


def qr_svg(uri: str, *, scale: int = 5) -> str:
    """The QR code of ``uri`` as an SVG document (with the SVG namespace, without an XML
    declaration: embeddable inline in HTML or usable as an image), black on an opaque white
    background with the standard 4-module quiet zone, ``scale`` px per module."""
    out = io.BytesIO()
    _qr(uri).save(
        out, kind="svg", xmldecl=False, svgns=True, nl=False, scale=scale, dark="#000", light="#fff"
    )
    return out.getvalue().decode()


_HALF_BLOCKS = {(False, False): " ", (True, False): "\u2580", (False, True): "\u2584"}
_HALF_BLOCKS[True, True] = "\u2588"


def qr_terminal(uri: str, *, invert: bool = False) -> str:
    """The QR code of ``uri`` as text, two module rows per line with Unicode half blocks. By default
    the light modules are drawn (for the usual light-on-dark terminal, as ``qrencode -t UTF8``);
    ``invert=True`` draws the dark modules instead, for dark-on-light terminals."""
    rows = [[bool(bit) == invert for bit in row] for row in _qr(uri).matrix_iter(border=4)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[pair] for pair in zip(top, bottom, strict=True)))
    return "\n".join(lines) + "\n"


def step_at(now: float) -> int:
    """The TOTP step (time counter) of the Unix time ``now``."""
    return int(now // INTERVAL_S)


def verify(
    secret: str, code: str, *, last_used_step: int | None, now: float | None = None
) -> int | None:
    """The step ``code`` matches, or None. ``code`` must be exactly 6 ASCII digits once whitespace
    is removed (``"123 456"`` is fine). The current step of ``now`` (Unix time; default: the clock)
    and ``DRIFT_STEPS`` either side are accepted, except steps ``<= last_used_step`` (replays).
    The caller stores the returned step as the new ``last_used_step``."""
    digits = "".join(code.split())
    if _CODE.fullmatch(digits) is None:
        return None
    otp = _totp(secret)
    current = step_at(time.time() if now is None else now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step < 0 or (last_used_step is not None and step <= last_used_step):
            continue
        if compare_digest(otp.generate_otp(step).encode(), digits.encode()):
            return step
    return None


RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
RECOVERY_LENGTH = 12
_RECOVERY = re.compile(f"[{RECOVERY_ALPHABET}]{{{RECOVERY_LENGTH}}}")


def new_recovery_codes(n: int = 10) -> list[str]:
    """``n`` distinct new recovery codes ``xxxx-xxxx-xxxx`` (lower-case base32, 60 bits each); show
    them once and store only ``hash_recovery_code`` of each."""
    if not 1 <= n <= 100:
        raise InvalidInput("between 1 and 100 recovery codes", n=n)
    codes: list[str] = []
    while len(codes) < n:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        code = "-".join(raw[i : i + 4] for i in range(0, RECOVERY_LENGTH, 4))
        if code not in codes:
            codes.append(code)
    return codes


def normalise_recovery_code(code: str) -> str:
    """``code`` lower-cased without dashes and whitespace (what users type varies)."""
    return "".join(code.lower().replace("-", "").split())


def hash_recovery_code(code: str, *, salt: str = "") -> str:
    """SHA-256 (hex) of the normalised ``code``, domain-separated and salted with ``salt``
    (pass the user id; see the module docstring for why a fast hash is enough)."""
    data = f"corral-recovery-code\0{salt}\0{normalise_recovery_code(code)}"
    return hashlib.sha256(data.encode()).hexdigest()


def match_recovery_code(code: str, hashes: Sequence[str | None], *, salt: str = "") -> int | None:
    """The index in ``hashes`` of the hash ``code`` matches, or None. Used codes may be left in
    place as None (indices stay stable). Every hash is compared in constant time, without stopping
    at the first match. The caller must then mark that index used."""
    if _RECOVERY.fullmatch(normalise_recovery_code(code)) is None:
        return None
    candidate = hash_recovery_code(code, salt=salt).encode()
    found: int | None = None
    for index, stored in enumerate(hashes):
        if stored is not None and compare_digest(candidate, stored.encode()) and found is None:
            found = index
    return found
