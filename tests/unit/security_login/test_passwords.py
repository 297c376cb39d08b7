"""Password strength rules each way; argon2 hash, verify, rehash; generated passwords."""

from __future__ import annotations

from typing import Literal

import pytest
from argon2 import PasswordHasher

from corral.api.errors import InvalidInput
from corral.server.security.passwords import (
    COMMON_PASSWORDS,
    MAX_LENGTH,
    check_strength,
    dummy_verify,
    generate_password,
    hash_password,
    strength_problems,
    verify_and_update,
    verify_password,
)

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Real argon2id at minimal cost, so the tests stay fast."""


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # passphrase: 2 classes, 28 characters
        "Tr0ub4dor&3x",
        "Zebra-Lamp-77q",
        "Xk9#mPq12z",  # exactly MIN_LENGTH
        ("Xk9#mPq1z-" * 103)[:MAX_LENGTH],  # exactly MAX_LENGTH
        "lowercase0nlY",  # 3 classes
        "plain lowercase words",  # 16+ characters: classes not required
    ],
)
def test_strong_passwords_pass(password: str) -> None:
    assert strength_problems(password, username="alice") == []
    check_strength(password, username="alice")


@pytest.mark.parametrize(
    ("password", "username", "problem"),
    [
        ("Xk9#mPq12", None, "too_short"),
        ("Xk9#mPq1z-" * 103, None, "too_long"),
        ("Alice-Wonder-2024q", "alice", "contains_username"),
        ("x-4l1ce-Wonder-9", "alice", "contains_username"),  # leetspeak
        ("password1234", None, "too_common"),
        ("PASSWORD12345", None, "too_common"),
        ("P@ssw0rd2024!", None, "too_common"),
        ("Summer2024!!", None, "too_common"),
        ("@dmin12345!", None, "too_common"),
        ("qwertyuiop", None, "too_common"),
        ("Corral-2025", None, "too_common"),
        ("lowercaseonly", None, "too_simple"),
        ("UPPER12345678", None, "too_simple"),
        ("aaaaaaaaaaaaaaaa", None, "too_predictable"),
        ("abcdefghijklmnop", None, "too_predictable"),
        ("1234567890123456", None, "too_predictable"),
        ("qwertyuiopasdfgh", None, "too_predictable"),
        ("Xk9#abc123", None, "too_predictable"),
    ],
)
def test_each_rule_refuses(password: str, username: str | None, problem: str) -> None:
    assert problem in strength_problems(password, username=username)
    with pytest.raises(InvalidInput) as info:
        check_strength(password, username=username)
    assert info.value.code == "invalid_input"
    assert info.value.context["reason"] == "weak_password"
    assert problem in info.value.context["problems"]


def test_username_rule_needs_the_username_and_ignores_tiny_names() -> None:
    assert strength_problems("Alice-Wonder-2024q", username="bob") == []
    assert strength_problems("Alice-Wonder-2024q") == []
    assert strength_problems("Alice-Wonder-2024q", username="al") == []
    assert "contains_username" in strength_problems("xx-ALICE-wonder-7", username="Alice")


def test_every_problem_is_reported_with_a_readable_message() -> None:
    with pytest.raises(InvalidInput) as info:
        check_strength("alice", username="alice")
    assert info.value.context["problems"] == [
        "too_short",
        "contains_username",
        "too_simple",
        "too_predictable",
    ]
    assert info.value.context["min_length"] == 10
    assert "at least 10 characters" in info.value.message
    assert "user name" in info.value.message


def test_common_list_is_lower_case_and_large_enough() -> None:
    assert len(COMMON_PASSWORDS) >= 200
    assert all(p == p.lower() for p in COMMON_PASSWORDS)


def test_hash_verify_round_trip() -> None:
    first = hash_password("Zebra-Lamp-77q", hasher=CHEAP)
    second = hash_password("Zebra-Lamp-77q", hasher=CHEAP)
    assert first.startswith("$argon2id$")
    assert first != second  # a new salt each time
    assert verify_password(first, "Zebra-Lamp-77q", hasher=CHEAP)
    assert verify_password(second, "Zebra-Lamp-77q", hasher=CHEAP)
    assert not verify_password(first, "Zebra-Lamp-77Q", hasher=CHEAP)
    assert not verify_password(first, "", hasher=CHEAP)


def test_production_parameters_and_legacy_hashes() -> None:
    """The default hasher is argon2-cffi's default, as the existing admin hashes were made."""
    legacy = PasswordHasher().hash("admin-generated-PW1")
    assert verify_password(legacy, "admin-generated-PW1")
    assert verify_and_update(legacy, "admin-generated-PW1") == (True, None)
    assert hash_password("x").startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.mark.parametrize("stored", ["!", "", "*disabled*", "$2b$12$abcdefghijklmnopqrstuv"])
def test_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password(stored, "!", hasher=CHEAP)
    assert verify_and_update(stored, "!", hasher=CHEAP) == (False, None)


def test_unicode_forms_of_one_password_match() -> None:
    composed = "Caf\u00e9-Noir-2024"
    decomposed = "Cafe\u0301-Noir-2024"
    assert composed != decomposed
    assert verify_password(hash_password(composed, hasher=CHEAP), decomposed, hasher=CHEAP)


def test_verify_and_update_rehashes_old_parameters() -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    old = hash_password("Zebra-Lamp-77q", hasher=CHEAP)

    assert verify_and_update(old, "Zebra-Lamp-77q", hasher=CHEAP) == (True, None)
    assert verify_and_update(old, "wrong-Password-1", hasher=stronger) == (False, None)

    ok, new = verify_and_update(old, "Zebra-Lamp-77q", hasher=stronger)
    assert ok
    assert new is not None
    assert "t=2" in new
    assert not stronger.check_needs_rehash(new)
    assert verify_password(new, "Zebra-Lamp-77q", hasher=stronger)


class CountingHasher(PasswordHasher):
    """A real argon2 hasher that records the hashes it is asked to verify."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(str(hash))
        return super().verify(hash, password)


def test_dummy_verify_does_a_real_argon2_verification() -> None:
    hasher = CountingHasher()
    dummy_verify("whatever-Password-1", hasher=hasher)
    dummy_verify("another-Password-2", hasher=hasher)
    assert len(hasher.verified) == 2
    assert hasher.verified[0] == hasher.verified[1]  # made once, reused
    assert hasher.verified[0].startswith("$argon2id$")
    assert not hasher.check_needs_rehash(hasher.verified[0])


def test_generated_passwords_pass_the_policy() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert len(password) == 20
        check_strength(password, username="admin")
    assert len(generate_password(12)) == 12


@pytest.mark.parametrize("length", [9, MAX_LENGTH + 1])
def test_generated_password_length_is_bounded(length: int) -> None:
    with pytest.raises(InvalidInput):
        generate_password(length)
