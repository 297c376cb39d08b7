"""libvirt's event loop: registered once per process and run in a daemon thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _ignore_error(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error on stderr by default; errors reach us as exceptions instead."""


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # keep delivering events whatever one iteration raised
            log.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start the thread running it.

    Idempotent and thread-safe. It must run before any libvirt connection that needs events,
    keepalive or close callbacks is opened in this process (libvirt binds a connection to the
    event implementation registered when it opens). Also silences libvirt's stderr error printer
    (process-wide). The thread is a daemon and lives as long as the process.
    """
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        _thread.start()
