"""Translate ``libvirt.libvirtError`` into Corral's error tree at the driver boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from corral.api.errors import CorralError, DriverError, InvalidState, NotFound

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN}
_INVALID_STATE = {libvirt.VIR_ERR_OPERATION_INVALID}


def translate(exc: libvirt.libvirtError, **context: Any) -> CorralError:
    """The Corral error for ``exc``: ``NotFound`` (no such domain), ``InvalidState`` (operation
    invalid in the domain's state) or ``DriverError``; libvirt's code and domain go in context."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    context = {"libvirt_code": code, "libvirt_domain": exc.get_error_domain(), **context}
    if code in _NOT_FOUND:
        return NotFound(message, **context)
    if code in _INVALID_STATE:
        return InvalidState(message, **context)
    return DriverError(message, **context)


@contextmanager
def libvirt_errors(**context: Any) -> Iterator[None]:
    """``with libvirt_errors(vm_id=…): …`` raises the translated error ``from`` the libvirt one."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, **context) from exc


def is_no_domain(exc: libvirt.libvirtError) -> bool:
    """True if ``exc`` says the domain does not exist."""
    return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
