"""Routes of one's own account: login, logout, password, two-factor authentication."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from corral.api.auth import (
    AccessKey,
    AccessKeyCreate,
    AccessKeyCreated,
    AccessKeyUpdate,
    LoginRequest,
    PasswordChange,
    RecoveryCodes,
    Token,
    TotpCode,
    TotpDisable,
    TotpEnrolment,
)
from corral.api.common import Page
from corral.server.http.deps import Listing, Svc, allow, bearer_token, listed
from corral.server.identity.caller import Caller
from corral.server.services import access_keys, auth

router = APIRouter(prefix="/auth", tags=["auth"])
Account = Annotated[Caller, allow("account:manage")]


@router.post("/login", response_model=Token)
async def login(req: LoginRequest, request: Request, svc: Svc) -> Token:
    """A bearer token. 401 ``otp_required``: the account has two-factor auth, send ``otp``.
    429 ``rate_limited`` (Retry-After): too many attempts from this address or for this account."""
    client = request.client.host if request.client else None
    return await auth.login(
        svc=svc, username=req.username, password=req.password, otp=req.otp, client_ip=client
    )


@router.post("/logout", status_code=204)
async def logout(request: Request, svc: Svc, caller: Account) -> Response:
    await auth.logout(svc=svc, token=bearer_token(request))
    return Response(status_code=204)


@router.post("/password", status_code=204)
async def change_password(
    req: PasswordChange, request: Request, svc: Svc, caller: Account
) -> Response:
    """Change one's password; every other session of the account ends."""
    await auth.change_password(
        svc=svc,
        user_id=caller.user_id,
        current=req.current_password,
        new=req.new_password,
        keep_token=bearer_token(request),
    )
    return Response(status_code=204)


@router.post("/totp", response_model=TotpEnrolment)
async def totp_begin(svc: Svc, caller: Account) -> TotpEnrolment:
    """Start two-factor enrolment: the secret, its otpauth:// URI and a QR code (shown once)."""
    return await auth.totp_begin(svc=svc, user_id=caller.user_id)


@router.post("/totp/confirm", response_model=RecoveryCodes)
async def totp_confirm(req: TotpCode, svc: Svc, caller: Account) -> RecoveryCodes:
    """Turn two-factor auth on with a first code; returns recovery codes (shown once)."""
    return await auth.totp_confirm(svc=svc, user_id=caller.user_id, code=req.code)


@router.post("/totp/disable", status_code=204)
async def totp_disable(req: TotpDisable, svc: Svc, caller: Account) -> Response:
    await auth.totp_disable(svc=svc, user_id=caller.user_id, password=req.password, code=req.code)
    return Response(status_code=204)


keys = APIRouter(prefix="/access-keys", tags=["access-keys"])


@keys.get("", response_model=Page[AccessKey])
async def list_access_keys(svc: Svc, caller: Account, q: Listing) -> Any:
    """One's AccessKeys (platform admins: everyone's); never their secrets."""
    return listed(await access_keys.list_keys(svc=svc, caller=caller, req=q))


@keys.post("", response_model=AccessKeyCreated, status_code=201)
async def create_access_key(spec: AccessKeyCreate, svc: Svc, caller: Account) -> AccessKeyCreated:
    """A new AccessKey for the caller; the secret is in this answer only."""
    return await access_keys.create(svc=svc, caller=caller, spec=spec)


@keys.patch("/{key_id}", response_model=AccessKey)
async def update_access_key(
    key_id: str, spec: AccessKeyUpdate, svc: Svc, caller: Account
) -> AccessKey:
    return await access_keys.update(svc=svc, caller=caller, key_id=key_id, spec=spec)


@keys.delete("/{key_id}", status_code=204)
async def delete_access_key(key_id: str, svc: Svc, caller: Account) -> Response:
    await access_keys.delete(svc=svc, caller=caller, key_id=key_id)
    return Response(status_code=204)
