"""One libvirt connection, opened lazily, dropped when libvirt says it closed, reopened on use."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.eventloop import ensure_event_loop

log = logging.getLogger(__name__)

LifecycleHandler = Callable[[str, int, int], None]
"""Called on libvirt's event thread with (domain name, event, detail); must not block."""
RebootHandler = Callable[[str], None]
"""Called on libvirt's event thread with the domain name when a guest resets; must not block."""

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


class Connection:
    """A thread-safe handle on ``uri``.

    ``get()`` returns an open connection, opening one if there is none or the last one died
    (libvirtd restarted, socket closed: reported by libvirt's close callback or keepalive).
    Each new connection gets the lifecycle handler registered again, so events resume after a
    reconnect; events that happened while disconnected are lost (callers reconcile with a list).
    """

    def __init__(
        self,
        uri: str,
        *,
        on_lifecycle: LifecycleHandler | None = None,
        on_reboot: RebootHandler | None = None,
    ) -> None:
        self._uri = uri
        self._on_lifecycle = on_lifecycle
        self._on_reboot = on_reboot
        self._lock = threading.Lock()
        self._conn: Any = None
        self._generation = 0
        self._stale_generation = -1
        self._event_ids: list[int] = []

    def get(self) -> Any:
        """The open ``virConnect`` (blocking; call from a worker thread). ``DriverError`` if
        libvirt cannot be reached."""
        with self._lock:
            if self.broken():
                log.warning("libvirt connection to %s lost; reconnecting", self._uri)
                self._discard()
            if self._conn is None:
                self._open()
            return self._conn

    def broken(self) -> bool:
        """True if the current connection died (the next ``get()`` will replace it)."""
        conn = self._conn
        if conn is None:
            return False
        return self._stale_generation == self._generation or not conn.isAlive()

    def close(self) -> None:
        """Deregister callbacks and close the connection, if open."""
        with self._lock:
            self._discard()

    def _open(self) -> None:
        ensure_event_loop()
        with libvirt_errors(uri=self._uri):
            conn = libvirt.open(self._uri)
        self._generation += 1
        generation = self._generation
        try:
            with libvirt_errors(uri=self._uri):
                # In-process drivers (test:///) have no socket: no keepalive, no close callback.
                _unless_unsupported(conn.setKeepAlive, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
                _unless_unsupported(conn.registerCloseCallback, self._closed, generation)
                self._event_ids = [
                    conn.domainEventRegisterAny(None, event_id, callback, None)
                    for event_id, callback in (
                        (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
                        (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
                    )
                ]
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        event_ids, self._event_ids = self._event_ids, []
        if conn is None:
            return
        undos: list[Callable[[], object]] = [
            *(lambda e=e: conn.domainEventDeregisterAny(e) for e in event_ids),
            conn.unregisterCloseCallback,
            conn.close,
        ]
        for undo in undos:
            try:
                undo()
            except libvirt.libvirtError as exc:  # a dead connection refuses; nothing to undo
                log.debug("ignored while closing libvirt connection: %s", exc)

    def _closed(self, _conn: Any, reason: int, generation: int) -> None:
        # On libvirt's event thread: only flag the connection; get() replaces it.
        log.warning("libvirt connection closed (reason %s)", reason)
        self._stale_generation = generation

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if self._on_lifecycle is not None:
            _guarded(self._on_lifecycle, dom.name(), event, detail)

    def _reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        if self._on_reboot is not None:
            _guarded(self._on_reboot, dom.name())


def _unless_unsupported(fn: Callable[..., object], *args: Any) -> None:
    try:
        fn(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise


def _guarded(handler: Callable[..., None], *args: Any) -> None:
    try:
        handler(*args)
    except Exception:  # never let an exception escape into libvirt's event loop
        log.exception("libvirt event handler failed")
