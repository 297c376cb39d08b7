"""Recovery codes: format and uniqueness, normalised hashing, one match, constant-time compares."""

from __future__ import annotations

import hmac
import re

import pytest

from corral.api.errors import InvalidInput
from corral.server.security import totp
from corral.server.security.totp import (
    hash_recovery_code,
    match_recovery_code,
    new_recovery_codes,
    normalise_recovery_code,
)

FORMAT = re.compile(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}")


def test_codes_have_the_format_and_are_unique() -> None:
    batches = [new_recovery_codes() for _ in range(20)]
    everything = [code for batch in batches for code in batch]
    assert all(len(batch) == 10 for batch in batches)
    assert all(FORMAT.fullmatch(code) for code in everything)
    assert len(set(everything)) == len(everything)
    assert len(new_recovery_codes(3)) == 3


@pytest.mark.parametrize("n", [0, -1, 101])
def test_code_count_is_bounded(n: int) -> None:
    with pytest.raises(InvalidInput):
        new_recovery_codes(n)


@pytest.mark.parametrize(
    "typed", ["ABCD-EFGH-2345", "abcdefgh2345", " abcd efgh 2345\n", "Abcd-efgh 2345"]
)
def test_hash_normalises_what_users_type(typed: str) -> None:
    assert normalise_recovery_code(typed) == "abcdefgh2345"
    assert hash_recovery_code(typed, salt="u1") == hash_recovery_code("abcd-efgh-2345", salt="u1")


def test_hash_is_salted_sha256_hex() -> None:
    plain = hash_recovery_code("abcd-efgh-2345")
    salted = hash_recovery_code("abcd-efgh-2345", salt="user-1")
    assert re.fullmatch(r"[0-9a-f]{64}", plain)
    assert len({plain, salted, hash_recovery_code("abcd-efgh-2345", salt="user-2")}) == 3
    assert plain != hash_recovery_code("abcd-efgh-2346")


def test_match_finds_the_index_once_normalised_and_only_once() -> None:
    codes = new_recovery_codes()
    hashes: list[str | None] = [hash_recovery_code(c, salt="u1") for c in codes]
    typed = codes[3].upper().replace("-", " ")
    index = match_recovery_code(typed, hashes, salt="u1")
    assert index == 3
    hashes[index] = None  # the caller marks it used
    assert match_recovery_code(typed, hashes, salt="u1") is None
    assert match_recovery_code(codes[4], hashes, salt="u1") == 4


def test_match_refuses_unknown_malformed_and_other_users_codes() -> None:
    codes = new_recovery_codes()
    hashes: list[str | None] = [hash_recovery_code(c, salt="u1") for c in codes]
    unknown = next(c for c in new_recovery_codes(20) if c not in codes)
    assert match_recovery_code(unknown, hashes, salt="u1") is None
    assert match_recovery_code(codes[0], hashes, salt="u2") is None
    assert match_recovery_code(codes[0][:-1], hashes, salt="u1") is None
    assert match_recovery_code(codes[0] + "a", hashes, salt="u1") is None
    assert match_recovery_code("", hashes, salt="u1") is None
    assert match_recovery_code(codes[0], [], salt="u1") is None


def test_every_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(totp, "compare_digest", spy)
    codes = new_recovery_codes()
    hashes: list[str | None] = [hash_recovery_code(c) for c in codes]
    hashes[5] = None
    assert match_recovery_code(codes[0], hashes) == 0
    assert len(calls) == 9  # no early exit at the first match; used slots skipped
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
