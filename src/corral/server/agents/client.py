"""The server's client of host agents.

``run`` sends a task with a caller-chosen id (an idempotency key: retrying with the same id never runs
the task twice), waits for the agent's inline answer or for its callback, and polls the agent as a
fallback so a lost callback or a server restart never loses a result.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json as _json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from corral.api.agent import (
    AgentTask,
    AttachRequest,
    AttachResponse,
    EnrollChallenge,
    EnrollComplete,
    EnrollRequest,
    TaskPayload,
    TaskState,
    TaskStatus,
    VmReport,
)
from corral.api.errors import (
    AgentError,
    AgentUnreachable,
    CorralError,
    ErrorBody,
    ErrorResponse,
    Timeout,
    Unauthenticated,
)
from corral.server.agents.directory import HostDirectory
from corral.server.agents.pool_state import PoolSyncState
from corral.util.ca import ClusterCA, host_context, issued_host_id
from corral.util.http1 import Http1Client, HttpError
from corral.util.tls import fetch_server_cert, pinned_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentEndpoint:
    """How to reach one host's agent. ``cert_pem``: the certificate the cluster CA issued for the
    host (verified against the CA and the host's name, see ``corral.util.ca``), else a pinned
    self-signed one (enrollment, hosts added before the cluster CA), None for plain http."""

    host_id: str
    url: str
    token: str
    cert_pem: str | None


class EnrollmentTokens:
    """One-time enrollment tokens of this process, kept as SHA-256 digests until they expire."""

    def __init__(self, *, ttl: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[bytes, tuple[str, float, bool]] = {}

    def issue(self, host_id: str) -> str:
        """A new token for enrolling ``host_id``, valid ``ttl`` seconds, once."""
        now = self.clock()
        self._tokens = {d: t for d, t in self._tokens.items() if t[1] > now}
        token = secrets.token_urlsafe(32)
        self._tokens[hashlib.sha256(token.encode()).digest()] = (host_id, now + self.ttl, False)
        return token

    def consume(self, token: str, *, host_id: str) -> None:
        """Use the token (for ``host_id``); ``Unauthenticated`` if unknown, for another host,
        expired or already used."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = next((t for d, t in self._tokens.items() if hmac.compare_digest(d, digest)), None)
        if entry is None or entry[0] != host_id:
            raise Unauthenticated("unknown enrollment token", host_id=host_id)
        owner, expires_at, used = entry
        if used:
            raise Unauthenticated("this enrollment token was already used", host_id=host_id)
        if self.clock() > expires_at:
            raise Unauthenticated("this enrollment token expired", host_id=host_id)
        self._tokens[digest] = (owner, expires_at, True)


class AgentClient:
    def __init__(
        self, *, callback_base: str, poll_interval: float = 5.0, task_timeout: float = 600.0
    ) -> None:
        self.callback_base = callback_base.rstrip("/")
        self.poll_interval = poll_interval
        self.task_timeout = task_timeout
        self._clients: dict[tuple[str, str | None], Http1Client] = {}
        self._waiting: dict[str, asyncio.Future[TaskStatus]] = {}
        self.directory: HostDirectory[Any] = HostDirectory()
        """What this process remembers about agents between requests (tokens, heartbeats)."""
        self.ca: ClusterCA | None = None
        """The cluster CA (set at server start): signs agent certificates, verifies agents."""
        self.enrollments = EnrollmentTokens()
        self.pool_sync = PoolSyncState()
        """Expected storage pool digests and the background pool syncs (``pool_state``)."""
        self.net_sync = PoolSyncState(ttl=300.0)
        """The same for hosts' network states, keyed by host (``services.net_sync``)."""

    def _key(self, ep: AgentEndpoint) -> tuple[str, str | None]:
        """One pool per https host (its own TLS identity), one per origin for plain http."""
        origin = urlsplit(ep.url)
        https = origin.scheme == "https"
        return f"{origin.scheme}://{origin.netloc}", ep.cert_pem if https else None

    def _client(self, ep: AgentEndpoint) -> Http1Client:
        key = self._key(ep)
        client = self._clients.get(key)
        if client is None:
            ctx: ssl.SSLContext | None = None
            if key[0].startswith("https:"):
                ctx = self._tls_context(ep)
            client = Http1Client(ssl_context=ctx, max_connections=200, timeout=30.0)
            self._clients[key] = client
        return client

    def _tls_context(self, ep: AgentEndpoint) -> ssl.SSLContext:
        """Verify an enrolled agent against the cluster CA and its host's name; else trust
        exactly the pinned certificate (or, with none, anything: ``_unverified``)."""
        if ep.cert_pem is None:
            return _unverified()
        if issued_host_id(ep.cert_pem) == ep.host_id:
            if self.ca is None:
                raise AgentError("the cluster CA is not loaded", host_id=ep.host_id)
            return host_context(self.ca.ca_pem, ep.host_id)
        return pinned_context(ep.cert_pem)

    async def close(self) -> None:
        await self.pool_sync.close()
        await self.net_sync.close()
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    async def _request(
        self, ep: AgentEndpoint, method: str, path: str, *, json: Any = None, retries: int = 3
    ) -> Any:
        url = ep.url.rstrip("/") + path
        headers = {"Authorization": f"Bearer {ep.token}"}
        content = b""
        if json is not None:
            content = _json.dumps(json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        last: Exception | None = None
        for attempt in range(retries):
            try:
                resp = await self._client(ep).request(method, url, content=content, headers=headers)
            except HttpError as exc:
                last = exc
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if resp.status >= 400:
                try:
                    body = ErrorResponse.model_validate_json(resp.content).error
                except Exception:
                    body = ErrorBody(code="agent_error", message=resp.text[:500])
                raise CorralError.from_body(body, resp.status)
            return _json.loads(resp.content)
        cause = (last.__cause__ or last) if last is not None else None
        raise AgentUnreachable(
            f"agent at {ep.url} is unreachable: {type(cause).__name__}: {last}", url=ep.url
        ) from last

    @staticmethod
    def fetch_cert(url: str) -> str | None:
        """The agent's TLS certificate (trust on first use), or None for plain http."""
        if not url.startswith("https://"):
            return None
        try:
            return fetch_server_cert(url)
        except OSError as exc:
            raise AgentUnreachable(f"cannot reach agent at {url}: {exc}", url=url) from exc

    async def attach(self, ep: AgentEndpoint, req: AttachRequest) -> AttachResponse:
        data = await self._request(ep, "POST", "/v1/attach", json=req.model_dump(mode="json"))
        return AttachResponse.model_validate(data)

    async def enroll(self, ep: AgentEndpoint, req: EnrollRequest) -> EnrollChallenge:
        """Step 1 of enrollment (``ep`` pins the agent's bootstrap certificate)."""
        data = await self._request(ep, "POST", "/v1/enroll", json=req.model_dump(mode="json"))
        return EnrollChallenge.model_validate(data)

    async def enroll_complete(self, ep: AgentEndpoint, req: EnrollComplete) -> AttachResponse:
        """Step 2: deliver the certificate, the CA and the host token. Sent once: the token works
        once, so a retry after a lost answer could only fail (the workflow rolls back)."""
        path = "/v1/enroll/complete"
        body = req.model_dump(mode="json")
        data = await self._request(ep, "POST", path, json=body, retries=1)
        return AttachResponse.model_validate(data)

    async def detach(self, ep: AgentEndpoint, *, timeout: float = 5.0) -> bool:
        """Best effort: tell a removed host's agent to forget this server (one attempt within
        ``timeout``), and drop its connections. True if the agent confirmed; never raises."""
        try:
            async with asyncio.timeout(timeout):
                await self._request(ep, "POST", "/v1/detach", retries=1)
            return True
        except (CorralError, TimeoutError) as exc:
            log.info("host %s: could not tell its agent to detach: %s", ep.host_id, exc)
            return False
        finally:
            key = self._key(ep)
            client = self._clients.pop(key, None) if key[1] is not None else None
            if client is not None:
                await client.aclose()

    async def vms(self, ep: AgentEndpoint) -> list[VmReport]:
        data = await self._request(ep, "GET", "/v1/vms")
        return [VmReport.model_validate(v) for v in data]

    def deliver(self, status: TaskStatus) -> bool:
        """Called by the callback route; True if someone was waiting for this task."""
        fut = self._waiting.get(status.task_id)
        if fut is None or fut.done():
            return False
        fut.set_result(status)
        return True

    async def run(self, ep: AgentEndpoint, task_id: str, payload: TaskPayload) -> dict[str, Any]:
        """Run a task on the agent and return its result; raise its error if it failed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TaskStatus] = loop.create_future()
        self._waiting[task_id] = fut
        try:
            task = AgentTask(
                task_id=task_id,
                payload=payload,
                callback_url=f"{self.callback_base}/api/v1/agent/tasks/{task_id}",
            )
            data = await self._request(ep, "POST", "/v1/tasks", json=task.model_dump(mode="json"))
            status = TaskStatus.model_validate(data)
            deadline = loop.time() + self.task_timeout
            while status.state == TaskState.running:
                left = deadline - loop.time()
                if left <= 0:
                    raise Timeout(f"task {task_id} on {ep.url} did not finish", task_id=task_id)
                try:
                    status = await asyncio.wait_for(
                        asyncio.shield(fut), timeout=min(self.poll_interval, left)
                    )
                except TimeoutError:
                    polled = await self._request(ep, "GET", f"/v1/tasks/{task_id}")
                    status = TaskStatus.model_validate(polled)
        finally:
            self._waiting.pop(task_id, None)
        if status.state == TaskState.failed:
            body = status.error or ErrorBody(code="agent_error", message="task failed")
            raise CorralError.from_body(body)
        return dict(status.result)


def _unverified() -> ssl.SSLContext:
    """TLS without verification: an agent added without a pinned certificate (plain trust)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def agent_error(message: str, **ctx: Any) -> AgentError:
    return AgentError(message, **ctx)
