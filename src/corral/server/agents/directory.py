"""What this server process remembers about its agents between requests (never the truth: the DB is).

- ``tokens``: the host an agent token belongs to, for ``ttl`` seconds (agents call several times a
  second in total; a removed host is forgotten at once in this process, on other nodes after ``ttl``).
- ``beats``: when each host's last heartbeat arrived and was not yet written to the database; the
  host monitor writes them all in one transaction (``take_beats``) before it looks for silent
  hosts, so a heartbeat costs no write of its own.
- ``endpoints``: how to reach each host's agent (url, token, pinned certificate), for ``ttl``
  seconds; every agent task of a workflow needs it.
- ``reports``: per host, the VM power states of its last heartbeat that was compared with the
  database, and when (a heartbeat that reports the same states again is compared only every
  ``REPORT_RECHECK_S``: lifecycle events carry changes at once, heartbeats are the safety net).
- ``capacity_facts``: per host, the facts its capacity was last computed from (as written);
  ``pending_facts``: newer facts of hosts whose capacity they do not change (free disk space),
  written with the beats.
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

    ttl: float = 120.0
    tokens: dict[str, tuple[float, H]] = field(default_factory=dict)
    beats: dict[str, datetime] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    endpoints: dict[str, tuple[float, object]] = field(default_factory=dict)
    reports: dict[str, tuple[int, float]] = field(default_factory=dict)
    capacity_facts: dict[str, tuple[object, ...]] = field(default_factory=dict)
    pending_facts: dict[str, dict[str, object]] = field(default_factory=dict)

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
        self.endpoints.pop(host_id, None)
        self.reports.pop(host_id, None)
        self.capacity_facts.pop(host_id, None)
        self.pending_facts.pop(host_id, None)

    def report_is_new(self, host_id: str, digest: int, recheck_s: float) -> bool:
        """Whether a heartbeat's VM states (``digest``) must be compared with the database: they
        differ from the last compared ones, or that comparison is ``recheck_s`` old."""
        seen = self.reports.get(host_id)
        return seen is None or seen[0] != digest or time.monotonic() - seen[1] >= recheck_s

    def report_compared(self, host_id: str, digest: int) -> None:
        self.reports[host_id] = (digest, time.monotonic())

    def endpoint(self, host_id: str) -> object | None:
        hit = self.endpoints.get(host_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def remember_endpoint(self, host_id: str, endpoint: object) -> None:
        if len(self.endpoints) > 100_000:
            self.endpoints.clear()
        self.endpoints[host_id] = (time.monotonic() + self.ttl, endpoint)

    def take_beats(self) -> dict[str, datetime]:
        """The heartbeats not yet written (and forget them)."""
        beats, self.beats = self.beats, {}
        return beats
