"""Host tokens at rest: sealed for the server's own calls, digested for the agents' calls.

A host token is the bearer secret shared by the server and one host's agent, both ways: the server
sends it to the agent (``AgentEndpoint.token``) and the agent sends it back with heartbeats, events
and task callbacks. The database never holds it in plain text:

- ``hosts.token_sealed``: the token sealed with the master key (``SecretBox``, context
  ``host:<id>:token``), opened where an ``AgentEndpoint`` is built (``open_token``, ``endpoint``);
- ``hosts.token_digest``: its SHA-256 (hex), what an agent's token is looked up by
  (``token_digest``). A plain hash is enough: tokens are 256 random bits, not guessable.

Databases from before this (revision ``c5d2e8f1a7b3``) get the digest from the migration, which
has no master key; their plain tokens, left in ``token_sealed``, are sealed at server start-up
(``seal_plain_tokens``) before anything reads them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.server.agents.client import AgentEndpoint
from corral.server.db.tables import HostRow
from corral.server.secretbox import SecretBox

log = logging.getLogger(__name__)


def token_context(host_id: str) -> str:
    """The ``SecretBox`` context of a host's token (a sealed token opens for its own row only)."""
    return f"host:{host_id}:token"


def token_digest(token: str) -> str:
    """What ``hosts.token_digest`` holds for ``token`` (SHA-256, 64 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A new host token: ``token`` goes to the agent, the other two to the host's row."""

    token: str
    sealed: str
    digest: str

    def __repr__(self) -> str:
        return f"<IssuedToken digest={self.digest[:8]}…>"


def issue(box: SecretBox, host_id: str) -> IssuedToken:
    """A new random token for ``host_id``, sealed and digested."""
    token = secrets.token_urlsafe(32)
    return IssuedToken(token, box.seal(token, token_context(host_id)), token_digest(token))


def open_token(box: SecretBox, host: HostRow) -> str:
    """The host's token in plain text (``CorralError`` if it does not open: see ``SecretBox``)."""
    return box.open(host.token_sealed, token_context(host.id))


def endpoint(box: SecretBox, host: HostRow, *, cert_pem: str | None) -> AgentEndpoint:
    """How to reach ``host``'s agent, with its token opened; ``cert_pem`` as in ``AgentEndpoint``
    (usually ``host.cert_pem``)."""
    return AgentEndpoint(
        host_id=host.id, url=host.url, token=open_token(box, host), cert_pem=cert_pem
    )


async def seal_plain_tokens(engine: AsyncEngine, box: SecretBox) -> int:
    """Seal every host token still in plain text (rows migrated from before sealed tokens);
    returns how many. Safe to run on several servers at once (conditional UPDATEs) and at every
    start (nothing to do: one query). On SQLite, after converting, the file is vacuumed and the
    WAL truncated so the plain tokens do not linger in free pages."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                select(HostRow.id, HostRow.token_sealed).where(
                    HostRow.token_sealed.not_like("cs1.%")
                )
            )
        ).all()
        plain = [(host_id, value) for host_id, value in rows if not SecretBox.is_sealed(value)]
        for host_id, value in plain:
            await conn.execute(
                update(HostRow)
                .where(HostRow.id == host_id, HostRow.token_sealed == value)
                .values(
                    token_sealed=box.seal(value, token_context(host_id)),
                    token_digest=token_digest(value),
                )
            )
    if plain:
        log.warning("sealed %d host token(s) stored in plain text by an older version", len(plain))
        if engine.dialect.name == "sqlite":
            async with engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(text("VACUUM"))
                await auto.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return len(plain)
