"""TOTP: codes from pyotp within the drift window, replay and malformed codes, URI and QR codes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno

from corral.api.errors import CorralError, InvalidInput
from corral.server.security.totp import (
    INTERVAL_S,
    new_secret,
    provisioning_uri,
    qr_svg,
    qr_terminal,
    step_at,
    verify,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_700_000_015.0  # 15 s into a step
STEP = int(NOW) // 30


def code_at(offset_steps: int, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).at(NOW + offset_steps * INTERVAL_S)


def test_new_secret_is_160_bit_base32() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(pyotp.TOTP(secret).byte_secret()) == 20


def test_step_at() -> None:
    assert step_at(NOW) == STEP
    assert step_at(STEP * 30) == STEP
    assert step_at(STEP * 30 - 0.001) == STEP - 1


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_within_one_step_verify(offset: int) -> None:
    assert verify(SECRET, code_at(offset), last_used_step=None, now=NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_codes_two_steps_away_are_refused(offset: int) -> None:
    code = code_at(offset)
    assert code not in {code_at(-1), code_at(0), code_at(1)}  # no coincidence in the window
    assert verify(SECRET, code, last_used_step=None, now=NOW) is None


def test_a_code_is_not_replayed() -> None:
    step = verify(SECRET, code_at(0), last_used_step=None, now=NOW)
    assert step == STEP
    assert verify(SECRET, code_at(0), last_used_step=step, now=NOW) is None
    assert verify(SECRET, code_at(0), last_used_step=step, now=NOW + 20) is None
    assert verify(SECRET, code_at(-1), last_used_step=step, now=NOW) is None  # older
    assert verify(SECRET, code_at(1), last_used_step=step, now=NOW) == STEP + 1


def test_a_wrong_code_of_the_right_shape_is_refused() -> None:
    window = {code_at(-1), code_at(0), code_at(1)}
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in window)
    assert verify(SECRET, wrong, last_used_step=None, now=NOW) is None
    other = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert code_at(0, other) not in window
    assert verify(SECRET, code_at(0, other), last_used_step=None, now=NOW) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:5],
        lambda c: c + "0",
        lambda c: c[:5] + "a",
        lambda c: "",
        lambda c: c[:3] + "-" + c[3:],
        lambda c: c.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),  # Arabic-Indic
        lambda c: "+" + c[1:],
    ],
)
def test_malformed_codes_are_refused(mangle: object) -> None:
    assert callable(mangle)
    code = mangle(code_at(0))
    assert verify(SECRET, code, last_used_step=None, now=NOW) is None


@pytest.mark.parametrize("fmt", ["{} {}", " {}{}\n", "{}\t{}"])
def test_spaces_in_codes_are_ignored(fmt: str) -> None:
    code = code_at(0)
    typed = fmt.format(code[:3], code[3:])
    assert verify(SECRET, typed, last_used_step=None, now=NOW) == STEP


def test_default_clock_is_the_wall_clock() -> None:
    assert verify(SECRET, pyotp.TOTP(SECRET).now(), last_used_step=None) is not None


@pytest.mark.parametrize("secret", ["not base32!", "JBSWY3DP"])
def test_an_invalid_stored_secret_is_an_internal_error(secret: str) -> None:
    with pytest.raises(CorralError) as info:
        verify(secret, "123456", last_used_step=None, now=NOW)
    assert info.value.code == "internal"


def test_provisioning_uri_format() -> None:
    uri = provisioning_uri(SECRET, "alice@example.com")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Corral:alice@example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["Corral"]
    assert "digits" not in query and "period" not in query  # the defaults: 6 digits, 30 s
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.secret, parsed.name, parsed.issuer) == (SECRET, "alice@example.com", "Corral")


def test_provisioning_uri_with_another_issuer_and_odd_account() -> None:
    uri = provisioning_uri(SECRET, "bob smith", issuer="Lab Corral")
    parsed = pyotp.parse_uri(uri)
    assert (parsed.name, parsed.issuer) == ("bob smith", "Lab Corral")
    assert " " not in uri
    with pytest.raises(InvalidInput):
        provisioning_uri(SECRET, "  ")


def svg_modules(svg: str) -> list[list[int]]:
    """The module matrix drawn by segno's SVG path (``M x y``, ``m dx dy``, ``h n``)."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    size = int(root.attrib["width"]) // 5
    grid = [[0] * size for _ in range(size)]
    line = next(p for p in root.iter(f"{ns}path") if p.get("class") == "qrline")
    x = y = 0.0
    for cmd, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", line.attrib["d"]):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        else:
            for col in range(int(x), int(x + float(a))):
                grid[int(y)][col] = 1
            x += float(a)
    return grid


def test_qr_svg_is_an_svg_of_the_uri() -> None:
    uri = provisioning_uri(SECRET, "alice@example.com")
    svg = qr_svg(uri)
    assert not svg.startswith("<?xml")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    expected = [list(row) for row in segno.make_qr(uri, error="m").matrix_iter(border=4)]
    assert int(root.attrib["width"]) == int(root.attrib["height"]) == len(expected) * 5
    paths = list(root.iter("{http://www.w3.org/2000/svg}path"))
    assert any(p.get("fill") == "#fff" for p in paths)  # opaque background for dark themes
    assert svg_modules(svg) == expected


@pytest.mark.parametrize("invert", [False, True])
def test_qr_terminal_draws_the_same_matrix(invert: bool) -> None:
    uri = provisioning_uri(SECRET, "alice@example.com")
    text = qr_terminal(uri, invert=invert)
    ink = {" ": (False, False), "\u2580": (True, False), "\u2584": (False, True)}
    ink["\u2588"] = (True, True)
    rows: list[list[int]] = []
    for line in text.splitlines():
        pairs = [ink[ch] for ch in line]
        for half in (0, 1):
            drawn = [pair[half] for pair in pairs]
            rows.append([int(d if invert else not d) for d in drawn])
    expected = svg_modules(qr_svg(uri))
    assert len(rows) in (len(expected), len(expected) + 1)
    assert rows[: len(expected)] == expected
    assert set(text) <= {" ", "\u2580", "\u2584", "\u2588", "\n"}
