"""Enrollment and detach routes of one served host (``/v1/enroll``, ``/v1/enroll/complete``,
``/v1/detach``); see ``corral.api.agent`` for the protocol and ``AttachStore`` for the rules."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header

from corral.agent.http.routes import Authed, Runtime
from corral.api.agent import (
    AttachResponse,
    Detached,
    EnrollChallenge,
    EnrollComplete,
    EnrollRequest,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")


@router.post("/enroll")
async def enroll(
    body: EnrollRequest,
    runtime: Runtime,
    authorization: Annotated[str | None, Header()] = None,
) -> EnrollChallenge:
    """A CSR for a new key of this host; no bearer needed while the agent is unclaimed."""
    csr = runtime.attachment.begin_enrollment(body, authorization=authorization)
    log.info("%s: enrollment as host %s started by %s", runtime.name, body.host_id, body.server_url)
    return EnrollChallenge(csr_pem=csr)


@router.post("/enroll/complete")
async def enroll_complete(
    body: EnrollComplete,
    runtime: Runtime,
    authorization: Annotated[str | None, Header()] = None,
) -> AttachResponse:
    """Install the certificate for the key of ``enroll`` and attach with the host token."""
    request = runtime.attachment.complete_enrollment(body, authorization=authorization)
    return await runtime.attach(request, authorization=authorization)


@router.post("/detach")
async def detach(runtime: Authed) -> Detached:
    """The server removed this host: forget the attachment and TLS identity, stop reporting."""
    host_id = runtime.attachment.current.host_id if runtime.attachment.current else None
    runtime.attachment.forget()
    await runtime.forget_pools()
    link, runtime.link = runtime.link, None
    if link is not None:
        await link.aclose()
    log.warning("%s: detached from host %s by its server", runtime.name, host_id)
    return Detached()
