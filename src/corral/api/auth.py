"""Authentication requests and tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from corral.api.common import Model


class LoginRequest(Model):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    otp: str | None = Field(
        None,
        max_length=32,
        description="6-digit TOTP code, or a recovery code, for accounts with two-factor auth",
    )


class PasswordChange(Model):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class TotpEnrolment(Model):
    """Shown once: add it to an authenticator app, then confirm with a code."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpCode(Model):
    code: str = Field(min_length=6, max_length=32)


class TotpDisable(Model):
    password: str = Field(min_length=1, max_length=1024)
    code: str = Field(min_length=6, max_length=32, description="TOTP or recovery code")


class RecoveryCodes(Model):
    """Shown once: each code replaces the TOTP code for one login."""

    recovery_codes: list[str]


class Token(Model):
    token: str
    expires_at: datetime
    username: str


class Health(Model):
    status: str
    version: str
    database: str


class AccessKeyCreate(Model):
    description: str = Field("", max_length=256)
    expires_at: datetime | None = None


class AccessKey(Model):
    """An AccessKey for programs: requests signed with HMAC-SHA256 (``corral.api.signing``)."""

    id: str = Field(description="the AccessKey ID")
    user_id: str
    description: str
    enabled: bool
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None


class AccessKeyCreated(AccessKey):
    """Shown once: the secret is never returned again."""

    secret: str


class AccessKeyUpdate(Model):
    enabled: bool | None = None
    description: str | None = Field(None, max_length=256)
