"""The Corral client: one HTTP session, the login call and the resource accessors."""

# Generated from corral/sdk/_async/client.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from corral.api.auth import Health, LoginRequest, Token
from corral.api.operations import Operation as OperationModel
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
from corral.sdk._sync.access import AccessKeys
from corral.sdk._sync.audit import Audit
from corral.sdk._sync.identity import (
    Members,
    Projects,
    Quotas,
    Roles,
    Users,
)
from corral.sdk._sync.networks import PortGroups, Subnets, Switches
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.recycle import DeletionPolicies, RecycleBin
from corral.sdk._sync.resources import (
    Clusters,
    Hosts,
    Offerings,
    Operations,
    Zones,
)
from corral.sdk._sync.security_groups import SecurityGroups
from corral.sdk._sync.snapshots import Snapshots
from corral.sdk._sync.storage import StoragePools
from corral.sdk._sync.vm_nics import VmNics
from corral.sdk._sync.vm_snapshots import VmSnapshots
from corral.sdk._sync.volumes import Volumes
from corral.sdk._sync.workloads import Images, Vms
from corral.sdk.auth import AccessKeyAuth

M = TypeVar("M", bound=BaseModel)

USER_AGENT = "corral-sdk/0.1"


class Client:
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
        transport: httpx.BaseTransport | None = None,
        access_key: tuple[str, str] | None = None,
        project: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if project is not None:
            headers["X-Corral-Project"] = project
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            verify=tls_verify(verify),
            timeout=timeout,
            transport=transport,
            headers=headers,
            auth=AccessKeyAuth(*access_key) if access_key is not None else None,
        )
        self._token: str | None = None
        self.token = token
        self.zones = Zones(self)
        self.clusters = Clusters(self)
        self.hosts = Hosts(self)
        self.images = Images(self)
        self.offerings = Offerings(self)
        self.storage_pools = StoragePools(self)
        self.switches = Switches(self)
        self.port_groups = PortGroups(self)
        self.subnets = Subnets(self)
        self.vms = Vms(self)
        self.volumes = Volumes(self)
        self.snapshots = Snapshots(self)
        self.vm_snapshots = VmSnapshots(self)
        self.vm_nics = VmNics(self)
        self.security_groups = SecurityGroups(self)
        self.recycle_bin = RecycleBin(self)
        self.deletion_policies = DeletionPolicies(self)
        self.operations = Operations(self)
        self.users = Users(self)
        self.projects = Projects(self)
        self.members = Members(self)
        self.roles = Roles(self)
        self.quotas = Quotas(self)
        self.access_keys = AccessKeys(self)
        self.audit = Audit(self)

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
    def login(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        otp: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> Self:
        """A client logged in as ``username``; raises ``Unauthenticated`` on bad credentials and
        ``OtpRequired`` when the account has two-factor auth and ``otp`` is missing."""
        client = cls(url, verify=verify, timeout=timeout, transport=transport)
        try:
            client.authenticate(username, password, otp=otp)
        except BaseException:
            client.close()
            raise
        return client

    def authenticate(self, username: str, password: str, *, otp: str | None = None) -> Token:
        """Log in on this client: get a token and use it from now on (``otp``: the TOTP or a
        recovery code of an account with two-factor auth)."""
        body = build(LoginRequest, username=username, password=password, otp=otp)
        token = self.call(Token, "POST", "/auth/login", body=body)
        self.token = token.token
        return token

    def health(self) -> Health:
        """The server's health (needs no token)."""
        return self.call(Health, "GET", "/health")

    def request(
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
            response = self._http.request(
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

    def call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """``request`` and parse the body as ``model``."""
        response = self.request(method, path, **kwargs)
        return parse(model, response.content)

    def operation(self, method: str, path: str, **kwargs: Any) -> Operation:
        """Send a mutating request; wrap the ``Operation`` it answers with (202) in a handle."""
        info = self.call(OperationModel, method, path, **kwargs)
        return Operation(self, info)

    def download(self, path: str, sink: DownloadSink) -> int:
        """Stream a ``GET`` response body into ``sink``; the number of bytes written."""
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                sink.start(int(response.headers.get("Content-Length", "0")))
                try:
                    for chunk in response.iter_bytes():
                        sink.sync_write(chunk)
                finally:
                    sink.close()
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.url) from exc
        return sink.written

    def stream(self, path: str, *, params: Params | None = None) -> Iterator[bytes]:
        """``GET`` ``path`` and yield its body chunk by chunk as it arrives (nothing is held in
        memory). A non-2xx answer raises its ``CorralError`` before the first chunk. Iterate to
        the end, or close the iterator, to release the connection."""
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, self.url) from exc

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
