"""The identity administration contract agrees with the server's tables and validates input."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.api.identity import (
    QUOTA_FIELDS,
    PasswordReset,
    Quota,
    QuotaUpdate,
    User,
    UserCreate,
    UserUpdate,
)
from corral.server.db.tables import QUOTA_RESOURCES


def test_quota_fields_are_the_server_quota_resources() -> None:
    assert QUOTA_FIELDS == QUOTA_RESOURCES
    assert set(Quota.model_fields) == {"project_id", *QUOTA_RESOURCES}
    assert set(QuotaUpdate.model_fields) == {"force", *QUOTA_RESOURCES}


def test_quota_update_tells_unlimited_from_unchanged() -> None:
    spec = QuotaUpdate.model_validate({"vms": None, "vcpus": 4})
    assert spec.limits() == {"vms": None, "vcpus": 4}
    assert QuotaUpdate.model_validate({"force": True}).limits() == {}
    with pytest.raises(ValidationError):
        QuotaUpdate.model_validate({"vms": -1})


def test_no_user_model_carries_a_secret() -> None:
    assert not {"password", "password_hash", "totp_secret", "recovery_codes"} & set(
        User.model_fields
    )


@pytest.mark.parametrize(
    "body",
    [{}, {"password": "x" * 12, "generate": True}, {"generate": False}, {"password": ""}],
)
def test_a_password_reset_sets_one_or_generates_one(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PasswordReset.model_validate(body)


def test_names_and_addresses() -> None:
    assert UserCreate(name="ann.lee@corp", password="p").name == "ann.lee@corp"
    for bad in ("", "-ann", "ann lee", "a" * 129):
        with pytest.raises(ValidationError):
            UserCreate(name=bad, password="p")
    with pytest.raises(ValidationError):
        UserCreate(name="ann", password="p", email="ann")
    assert UserUpdate(email="").email == ""
