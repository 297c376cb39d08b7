"""``FakeCorral``: the REST surface of the server over ``httpx.MockTransport``, state in memory."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from corral.api.auth import Health, LoginRequest, Token
from corral.api.common import Page
from corral.api.errors import (
    CorralError,
    ErrorResponse,
    InvalidInput,
    NotCancellable,
    NotFound,
    Unauthenticated,
)
from corral.api.operations import Operation, OperationStatus
from corral.sdk.testing import mutations
from corral.sdk.testing.state import FakeState, now

M = TypeVar("M", bound=BaseModel)

Route = Callable[[httpx.Request, re.Match[str]], httpx.Response]

PREFIX = "/api/v1"


class FakeCorral:
    """A fake Corral server for tests of code that uses the SDK or the CLI.

    Pass ``fake.transport`` as ``transport=`` to ``Client``/``AsyncClient``. Resources live in
    ``fake.state``; operations that are not pure DB changes advance one step per long poll
    (``GET /operations/{id}?wait=``) and finish after ``state.op_steps`` polls. ``fail_next(type, error)``
    makes the next operation of that type fail with ``error``. ``requests`` logs every request.
    """

    def __init__(self, *, username: str = "admin", password: str = "secret") -> None:
        self.users = {username: password}
        self.state = FakeState()
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)
        self._routes: list[tuple[str, re.Pattern[str], Route]] = [
            ("POST", re.compile(r"/auth/login"), self._login),
            ("GET", re.compile(r"/health"), self._health),
            ("GET", re.compile(r"/operations"), self._list_operations),
            ("GET", re.compile(r"/operations/(?P<id>[^/]+)"), self._get_operation),
            ("POST", re.compile(r"/operations/(?P<id>[^/]+)/cancel"), self._cancel_operation),
            ("GET", re.compile(r"/images/(?P<ref>[^/]+)/data"), self._download),
            ("PUT", re.compile(r"/images/(?P<ref>[^/]+)/data"), self._upload),
            ("POST", re.compile(r"/vms/(?P<ref>[^/]+)/(?P<action>[a-z]+)"), self._vm_action),
            ("GET", re.compile(r"/(?P<coll>[a-z]+)"), self._list),
            ("GET", re.compile(r"/(?P<coll>[a-z]+)/(?P<ref>[^/]+)"), self._get),
            ("POST", re.compile(r"/(?P<coll>[a-z]+)"), self._create),
            ("PATCH", re.compile(r"/(?P<coll>[a-z]+)/(?P<ref>[^/]+)"), self._update),
            ("DELETE", re.compile(r"/(?P<coll>[a-z]+)/(?P<ref>[^/]+)"), self._delete),
        ]

    def fail_next(self, op_type: str, error: CorralError) -> None:
        """The next operation of ``op_type`` (``vm.create``...) fails with ``error``."""
        self.state.failures[op_type] = error

    def login_token(self) -> str:
        """A valid token, without going through ``/auth/login``."""
        token = secrets.token_urlsafe(16)
        self.state.tokens.add(token)
        return token

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request like the server would (the ``MockTransport`` handler)."""
        self.requests.append(request)
        path = request.url.path
        if not path.startswith(PREFIX):
            return _error(NotFound(f"no route {path}"))
        path = path.removeprefix(PREFIX)
        try:
            for method, pattern, route in self._routes:
                match = pattern.fullmatch(path)
                if match and method == request.method:
                    if route not in (self._login, self._health):
                        self._authenticate(request)
                    return route(request, match)
            raise NotFound(f"no route {request.method} {path}")
        except CorralError as exc:
            return _error(exc)

    def _authenticate(self, request: httpx.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.state.tokens:
            raise Unauthenticated("missing or invalid token")

    def _login(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        body = _body(LoginRequest, request)
        if self.users.get(body.username) != body.password:
            raise Unauthenticated("bad user name or password")
        token = Token(
            token=self.login_token(),
            expires_at=now() + timedelta(hours=12),
            username=body.username,
        )
        return _json(200, token)

    def _health(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        return _json(200, Health(status="ok", version="fake", database="memory"))

    def _list(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        table = self.state.collection(match["coll"])
        return _page(request, list(table.values()))

    def _get(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        table = self.state.collection(match["coll"])
        return _json(200, self.state.find(table, match["ref"], match["coll"].rstrip("s")))

    def _create(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        create = mutations.CREATE.get(match["coll"])
        if create is None:
            raise NotFound(f"cannot create {match['coll']}")
        model, handler = create
        return _operation(handler(self.state, _body(model, request)))

    def _update(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        update = mutations.UPDATE.get(match["coll"])
        if update is None:
            raise NotFound(f"cannot update {match['coll']}")
        model, handler = update
        return _operation(handler(self.state, match["ref"], _body(model, request)))

    def _delete(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        return _operation(mutations.delete(self.state, match["coll"], match["ref"]))

    def _vm_action(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        action = mutations.VM_ACTIONS.get(match["action"])
        if action is None:
            raise NotFound(f"no VM action {match['action']}")
        model, handler = action
        body = _body(model, request) if model is not None else None
        return _operation(handler(self.state, match["ref"], body))

    def _upload(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        length = request.headers.get("Content-Length")
        data = request.content
        if length is None or int(length) != len(data):
            raise InvalidInput(f"Content-Length {length} but {len(data)} bytes received")
        return _operation(mutations.upload_image(self.state, match["ref"], data))

    def _download(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        image = self.state.find(self.state.images, match["ref"], "image")
        data = self.state.image_data.get(image.id)
        if data is None:
            raise NotFound(f"image {image.name} has no data")
        return httpx.Response(
            200, content=data, headers={"Content-Type": "application/octet-stream"}
        )

    def _list_operations(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        return _page(request, [op.model for op in self.state.operations.values()])

    def _find_operation(self, op_id: str) -> Any:
        op = self.state.operations.get(op_id)
        if op is None:
            raise NotFound(f"operation {op_id} not found", kind="operation", ref=op_id)
        return op

    def _get_operation(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        op = self._find_operation(match["id"])
        if "wait" in request.url.params:
            self.state.advance(op)
        return _json(200, op.model)

    def _cancel_operation(self, request: httpx.Request, match: re.Match[str]) -> httpx.Response:
        op = self._find_operation(match["id"])
        if op.model.status is not OperationStatus.queued:
            raise NotCancellable(f"operation {op.model.id} is {op.model.status}")
        self.state.cancel(op)
        return _json(200, op.model)


def _body(model: type[M], request: httpx.Request) -> M:
    try:
        return model.model_validate_json(request.content or b"{}")
    except ValidationError as exc:
        raise InvalidInput(f"invalid {model.__name__}: {exc.errors()[0]['msg']}") from exc


def _json(status: int, model: BaseModel, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=model.model_dump_json().encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _operation(op: Operation) -> httpx.Response:
    return _json(202, op, {"Location": f"{PREFIX}/operations/{op.id}"})


def _error(exc: CorralError) -> httpx.Response:
    return _json(exc.http_status, ErrorResponse(error=exc.to_body()))


def _page(request: httpx.Request, items: list[Any]) -> httpx.Response:
    params = dict(request.url.params)
    limit = int(params.pop("limit", "100"))
    offset = int(params.pop("offset", "0"))
    sort = params.pop("sort", "created_at")
    rows = [(item, item.model_dump(mode="json")) for item in items]
    for key, value in params.items():
        if rows and key not in rows[0][1]:
            raise InvalidInput(f"cannot filter on {key}")
        rows = [row for row in rows if _text(row[1].get(key)) == value]
    field = sort.removeprefix("-")
    rows.sort(key=lambda row: _text(row[1].get(field)), reverse=sort.startswith("-"))
    chosen = [item for item, _ in rows[offset : offset + limit]]
    page = Page[Any](items=chosen, total=len(rows), limit=limit, offset=offset)
    return _json(200, page)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
