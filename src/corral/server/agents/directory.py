"""What this server process remembers about its agents between requests (never the truth: the DB is).

- ``tokens``: the host an agent token belongs to, for ``ttl`` seconds (agents call several times a
  second in total; a removed host is forgotten at once in this process, on other nodes after ``ttl``).
- ``beats``: when each host's last heartbeat arrived and was not yet written to the database; the
  host monitor writes them all in one transaction (``take_beats``) before it looks for silent
  hosts, so a heartbeat costs no write of its own.
- ``live``: hosts whose ``connected`` status this process wrote and nobody changed since; a
  heartbeat of any other host is written at once (it changes the host's status).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

H = TypeVar("H")


@dataclass
class HostDirectory(Generic[H]):
    """In-memory, per process; see the module docstring."""

    ttl: float = 30.0
    tokens: dict[str, tuple[float, H]] = field(default_factory=dict)
    beats: dict[str, datetime] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)

    def host_for(self, token: str) -> H | None:
        hit = self.tokens.get(token)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def remember(self, token: str, host: H) -> None:
        if len(self.tokens) > 100_000:  # bounded, whatever callers send
            self.tokens.clear()
        self.tokens[token] = (time.monotonic() + self.ttl, host)

    def forget_host(self, host_id: str, token: str | None = None) -> None:
        """The host was removed (or changed): drop everything known about it."""
        if token is not None:
            self.tokens.pop(token, None)
        self.beats.pop(host_id, None)
        self.live.discard(host_id)

    def take_beats(self) -> dict[str, datetime]:
        """The heartbeats not yet written (and forget them)."""
        beats, self.beats = self.beats, {}
        return beats
