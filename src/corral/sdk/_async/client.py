"""The Corral client: one HTTP session, the login call and the resource accessors."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from corral.api.auth import Health, LoginRequest, Token
from corral.api.operations import Operation as OperationModel
from corral.sdk._async.access import AsyncAccessKeys
from corral.sdk._async.audit import AsyncAudit
from corral.sdk._async.identity import (
    AsyncMembers,
    AsyncProjects,
    AsyncQuotas,
    AsyncRoles,
    AsyncUsers,
)
from corral.sdk._async.networks import AsyncPortGroups, AsyncSubnets, AsyncSwitches
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._async.recycle import AsyncDeletionPolicies, AsyncRecycleBin
from corral.sdk._async.resources import (
    AsyncClusters,
    AsyncHosts,
    AsyncOfferings,
    AsyncOperations,
    AsyncZones,
)
from corral.sdk._async.security_groups import AsyncSecurityGroups
from corral.sdk._async.snapshots import AsyncSnapshots
from corral.sdk._async.storage import AsyncStoragePools
from corral.sdk._async.vm_nics import AsyncVmNics
from corral.sdk._async.vm_snapshots import AsyncVmSnapshots
from corral.sdk._async.volumes import AsyncVolumes
from corral.sdk._async.workloads import AsyncImages, AsyncVms
from corral.sdk._base import (
    API_PREFIX,
    DownloadSink,
    Params,
    build,
    error_from_response,
    error_from_transport,
    parse,
    tls_verify,
)
from corral.sdk.auth import AccessKeyAuth

M = TypeVar("M", bound=BaseModel)

USER_AGENT = "corral-sdk/0.1"


class AsyncClient:
    """A session with a Corral server.

    ``url`` is the server's base URL (``https://host:8443``); ``token`` a bearer token from
    ``login``. ``verify`` is ``True`` (system CAs), ``False`` (no checks), the path of a PEM file to
    trust, or an ``ssl.SSLContext`` (e.g. ``corral.util.tls.pinned_context``). ``transport``
    replaces the network (tests pass an ``httpx.MockTransport``). ``access_key`` (id, secret)
    signs every request with an AccessKey instead of a token; ``project`` scopes every request to
    one project (``X-Corral-Project``). Every failure raises a
    ``corral.api.errors.CorralError`` subclass.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        access_key: tuple[str, str] | None = None,
        project: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if project is not None:
            headers["X-Corral-Project"] = project
        self._http = httpx.AsyncClient(
            base_url=self.url + API_PREFIX,
            verify=tls_verify(verify),
            timeout=timeout,
            transport=transport,
            headers=headers,
            auth=AccessKeyAuth(*access_key) if access_key is not None else None,
        )
        self._token: str | None = None
        self.token = token
        self.zones = AsyncZones(self)
        self.clusters = AsyncClusters(self)
        self.hosts = AsyncHosts(self)
        self.images = AsyncImages(self)
        self.offerings = AsyncOfferings(self)
        self.storage_pools = AsyncStoragePools(self)
        self.switches = AsyncSwitches(self)
        self.port_groups = AsyncPortGroups(self)
        self.subnets = AsyncSubnets(self)
        self.vms = AsyncVms(self)
        self.volumes = AsyncVolumes(self)
        self.snapshots = AsyncSnapshots(self)
        self.vm_snapshots = AsyncVmSnapshots(self)
        self.vm_nics = AsyncVmNics(self)
        self.security_groups = AsyncSecurityGroups(self)
        self.recycle_bin = AsyncRecycleBin(self)
        self.deletion_policies = AsyncDeletionPolicies(self)
        self.operations = AsyncOperations(self)
        self.users = AsyncUsers(self)
        self.projects = AsyncProjects(self)
        self.members = AsyncMembers(self)
        self.roles = AsyncRoles(self)
        self.quotas = AsyncQuotas(self)
        self.access_keys = AsyncAccessKeys(self)
        self.audit = AsyncAudit(self)

    @property
    def token(self) -> str | None:
        """The bearer token sent with every request (``None``: anonymous)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value is None:
            self._http.headers.pop("Authorization", None)
        else:
            self._http.headers["Authorization"] = f"Bearer {value}"

    @classmethod
    async def login(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        otp: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """A client logged in as ``username``; raises ``Unauthenticated`` on bad credentials and
        ``OtpRequired`` when the account has two-factor auth and ``otp`` is missing."""
        client = cls(url, verify=verify, timeout=timeout, transport=transport)
        try:
            await client.authenticate(username, password, otp=otp)
        except BaseException:
            await client.aclose()
            raise
        return client

    async def authenticate(self, username: str, password: str, *, otp: str | None = None) -> Token:
        """Log in on this client: get a token and use it from now on (``otp``: the TOTP or a
        recovery code of an account with two-factor auth)."""
        body = build(LoginRequest, username=username, password=password, otp=otp)
        token = await self.call(Token, "POST", "/auth/login", body=body)
        self.token = token.token
        return token

    async def health(self) -> Health:
        """The server's health (needs no token)."""
        return await self.call(Health, "GET", "/health")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: BaseModel | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request under ``/api/v1``; raise the matching ``CorralError`` unless 2xx.

        ``body`` is sent as JSON (fields that are ``None`` or were not given are omitted); ``content`` is a raw body
        (bytes or an iterator of chunks).
        """
        if body is not None:
            content = body.model_dump_json(exclude_none=True, exclude_unset=True)
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            response = await self._http.request(
                method,
                path,
                params=params,
                content=content,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.url) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    async def call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """``request`` and parse the body as ``model``."""
        response = await self.request(method, path, **kwargs)
        return parse(model, response.content)

    async def operation(self, method: str, path: str, **kwargs: Any) -> AsyncOperation:
        """Send a mutating request; wrap the ``Operation`` it answers with (202) in a handle."""
        info = await self.call(OperationModel, method, path, **kwargs)
        return AsyncOperation(self, info)

    async def download(self, path: str, sink: DownloadSink) -> int:
        """Stream a ``GET`` response body into ``sink``; the number of bytes written."""
        try:
            async with self._http.stream("GET", path) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                sink.start(int(response.headers.get("Content-Length", "0")))
                try:
                    async for chunk in response.aiter_bytes():
                        await sink.async_write(chunk)
                finally:
                    sink.close()
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.url) from exc
        return sink.written

    async def stream(self, path: str, *, params: Params | None = None) -> AsyncIterator[bytes]:
        """``GET`` ``path`` and yield its body chunk by chunk as it arrives (nothing is held in
        memory). A non-2xx answer raises its ``CorralError`` before the first chunk. Iterate to
        the end, or close the iterator, to release the connection."""
        try:
            async with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.url) from exc

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
