"""Authentication requests and tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from corral.api.common import Model


class LoginRequest(Model):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class Token(Model):
    token: str
    expires_at: datetime
    username: str


class Health(Model):
    status: str
    version: str
    database: str
