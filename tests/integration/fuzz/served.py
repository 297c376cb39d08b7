"""A whole Corral (server + simulator agent with a few hosts) served in-process to schemathesis.

``ServedCorral`` is an ASGI app: schemathesis calls it on its own event-loop thread, and the
stack starts there on the first request (so every database connection, lock and background task
lives on the loop that serves the requests). ``run`` runs a coroutine on that loop from the test
thread; ``close`` stops the stack.

``prepare`` turns a generated case into one that is safe to send and returns the headers to send
it with: the fuzzer is a platform admin (a session token of ``admin``), except on the routes that
act on the caller's own account, which get a fresh throwaway user's token (see ``SELF_ROUTES``).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from schemathesis import Case
from sqlalchemy import select

from corral.server.db.tables import TokenRow, UserRow
from corral.server.db.types import utcnow
from corral.server.security import passwords
from corral.server.services import auth
from corral.server.services.context import Services
from corral.up import Stack, start_stack

T = TypeVar("T")
Scope = dict[str, Any]

ADMIN = "admin"
THROWAWAY = "fuzz-throwaway"
"""Owns the token of each call to a ``SELF_ROUTES`` route (a fresh one per call)."""
VICTIM = "fuzz-victim"
"""Takes the password resets the fuzzer aims at the admin."""
SIM_HOSTS = 3

SELF_ROUTES = frozenset(
    {
        # Each acts on the caller's own session or account: with the admin's token, logout would
        # end the fuzzer's session, a password change would end it too (other sessions end) and
        # a confirmed TOTP enrolment would lock the admin out. A throwaway user's fresh token
        # fuzzes them for real without touching the admin.
        "/api/v1/auth/logout",
        "/api/v1/auth/password",
        "/api/v1/auth/totp",
        "/api/v1/auth/totp/confirm",
        "/api/v1/auth/totp/disable",
    }
)
LOOPBACK_URL = "http://127.0.0.1:9/fuzz"
"""Where a fuzzed agent or image URL is sent instead: nothing listens on port 9 (discard), so
the host-add or image-import operation fails fast, and no traffic leaves this machine."""
MAX_WAIT_S = 1.0
"""Cap of ``GET /operations/{id}?wait=``: the long poll may be 300 s, the run is bounded."""


class ServedCorral:
    """ASGI app serving a Corral stack that starts on the first request (see module doc)."""

    def __init__(self) -> None:
        self.stack: Stack | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.admin_token = ""
        self.admin_id = ""
        self._data_dir: Path | None = None
        self._starting: asyncio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:  # nothing to do: the stack starts lazily and stops in ``close``
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        stack = await self._started()
        await stack.server.app(scope, receive, send)

    @property
    def services(self) -> Services:
        assert self.stack is not None, "no request was served yet"
        return self.stack.server.services

    async def _started(self) -> Stack:
        if self.stack is not None:
            return self.stack
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.stack is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="corral-fuzz-"))
                stack = await start_stack(
                    data_dir=self._data_dir,
                    port=0,
                    agent_port=0,
                    host="127.0.0.1",
                    tls=False,
                    driver="simulator",
                    sim_hosts=SIM_HOSTS,
                    server_overrides={"admin_password": passwords.generate_password()},
                )
                self.loop = asyncio.get_running_loop()
                self.stack = stack
                self.admin_token = await self._mint(ADMIN)
                self.admin_id = await auth.check_token(svc=self.services, token=self.admin_token)
                await self._mint(VICTIM)
            return self.stack

    async def _mint(self, name: str) -> str:
        """A fresh session token of user ``name``, created (or re-enabled) if needed: tokens are
        stored as their SHA-256 (``TokenRow``), so no login (and no login rate limit) is needed."""
        token = secrets.token_urlsafe(32)
        async with self.services.sessionmaker.begin() as s:
            user = await s.scalar(select(UserRow).where(UserRow.name == name))
            if user is None:
                user = UserRow(
                    name=name, password_hash=passwords.hash_password(secrets.token_hex())
                )
                s.add(user)
                await s.flush()
            user.enabled = True
            expires = utcnow() + timedelta(hours=1)
            s.add(TokenRow(id=hashlib.sha256(token.encode()).hexdigest(), user_id=user.id,
                           expires_at=expires))  # fmt: skip
        return token

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the loop serving the app, from another thread."""
        assert self.loop is not None, "no request was served yet"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the stack (if it started) and delete its data."""
        if self.stack is not None:
            self.run(_awaited(self.stack.stop()))
            self.stack = None
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def prepare(self, case: Case) -> dict[str, str]:
        """Make ``case`` safe to send (in place) and return the headers to send it with."""
        path, method = case.operation.path, case.method.upper()
        if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
            case.body["url"] = LOOPBACK_URL  # agent or image URL: never leave the machine
        if path == "/api/v1/operations/{op_id}" and isinstance(case.query, dict):
            wait = case.query.get("wait")
            if isinstance(wait, int | float) and wait > MAX_WAIT_S:
                case.query["wait"] = MAX_WAIT_S
        if (
            method == "POST"
            and path == "/api/v1/users/{ref}/password"
            and case.path_parameters
            and case.path_parameters.get("ref") in (ADMIN, self.admin_id)
        ):
            # a reset ends every session of the user: the admin's would end the fuzzer's own
            case.path_parameters["ref"] = VICTIM
        token = self.admin_token
        if path in SELF_ROUTES:
            token = self.run(self._mint(THROWAWAY))
        return {"Authorization": f"Bearer {token}"}


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw
