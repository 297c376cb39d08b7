"""The one error tree of Corral, with stable codes shared by server, agent, SDK and CLI.

    CorralError                      500 internal
    ├── InvalidInput                 422 invalid_input          (expected)
    │   └── InvalidQuery             400 invalid_query          (q / sort / fields of a list)
    ├── Unauthenticated              401 unauthenticated        (expected)
    │   └── OtpRequired              401 otp_required           (password right; send the 2FA code)
    ├── Forbidden                    403 forbidden              (expected)
    ├── RateLimited                  429 rate_limited           (expected; context.retry_after_s)
    ├── NotFound                     404 not_found              (expected)
    ├── Conflict                     409 conflict               (expected)
    │   ├── NameTaken                409 name_taken
    │   ├── InvalidState             409 invalid_state
    │   ├── NotCancellable           409 not_cancellable
    │   ├── InUse                    409 in_use
    │   └── QuotaExceeded            409 quota_exceeded        (context: resource, limit, used, requested)
    ├── PreconditionFailed           412 precondition_failed    (expected; If-Match is stale)
    ├── NoHostAvailable              409 no_host_available      (expected; context.hosts says why each)
    ├── OperationCancelled           409 cancelled              (expected)
    ├── AgentUnreachable             502 agent_unreachable
    ├── AgentError                   502 agent_error
    ├── DriverError                  500 driver_error
    │   └── InjectedFault            500 injected_fault         (fault injection in tests/simulator)
    ├── StorageError                 500 storage_error
    └── Timeout                      504 timeout

Every error carries ``code`` (stable, machine readable), ``message`` (for humans), ``context`` (a JSON
object with details) and ``http_status``. ``expected`` errors are caller mistakes: they are logged
without a traceback. Translate foreign exceptions once at each boundary: ``raise X(...) from exc``.
``from_body`` rebuilds the right subclass from a wire ``ErrorBody`` so callers can ``except NotFound``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The wire form of an error: ``{"error": {"code", "message", "context"}}``."""

    code: str = Field(examples=["not_found"])
    message: str
    context: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorBody


_REGISTRY: dict[str, type[CorralError]] = {}


class CorralError(Exception):
    """Base of every Corral error. Subclasses set ``code``, ``http_status`` and ``expected``."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    expected: ClassVar[bool] = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY.setdefault(cls.code, cls)

    def to_body(self) -> ErrorBody:
        """The wire form of this error."""
        return ErrorBody(code=self.code, message=self.message, context=self.context)

    @staticmethod
    def from_body(body: ErrorBody, http_status: int | None = None) -> CorralError:
        """Rebuild the most specific error class known for ``body.code``."""
        cls = _REGISTRY.get(body.code, CorralError)
        err = cls(body.message, **body.context)
        if cls is CorralError:
            err.remote_code = body.code  # type: ignore[attr-defined]
            if http_status is not None:
                err.remote_status = http_status  # type: ignore[attr-defined]
        return err

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


_REGISTRY["internal"] = CorralError


class InvalidInput(CorralError):
    code = "invalid_input"
    http_status = 422
    expected = True


class InvalidQuery(InvalidInput):
    """A list endpoint's ``q``, ``sort``, ``fields`` or filter parameters name an unknown field,
    use an operator the field does not support or a value of the wrong type. ``context.field``
    names the field (or the condition text)."""

    code = "invalid_query"
    http_status = 400


class Unauthenticated(CorralError):
    code = "unauthenticated"
    http_status = 401
    expected = True


class OtpRequired(Unauthenticated):
    code = "otp_required"


class RateLimited(CorralError):
    """Too many requests (or a login back-off): ``context.retry_after_s`` says when to retry; the
    HTTP answer carries it as ``Retry-After``."""

    code = "rate_limited"
    http_status = 429
    expected = True


class Forbidden(CorralError):
    code = "forbidden"
    http_status = 403
    expected = True


class NotFound(CorralError):
    code = "not_found"
    http_status = 404
    expected = True


class Conflict(CorralError):
    code = "conflict"
    http_status = 409
    expected = True


class PreconditionFailed(CorralError):
    code = "precondition_failed"
    http_status = 412
    expected = True


class NameTaken(Conflict):
    code = "name_taken"


class InvalidState(Conflict):
    code = "invalid_state"


class NotCancellable(Conflict):
    code = "not_cancellable"


class InUse(Conflict):
    code = "in_use"


class QuotaExceeded(Conflict):
    code = "quota_exceeded"


class PoolFull(Conflict):
    """The storage pool cannot hold more (allocated would exceed total x overcommit)."""

    code = "pool_full"


class NoHostAvailable(CorralError):
    code = "no_host_available"
    http_status = 409
    expected = True


class OperationCancelled(CorralError):
    code = "cancelled"
    http_status = 409
    expected = True


class AgentUnreachable(CorralError):
    code = "agent_unreachable"
    http_status = 502


class AgentError(CorralError):
    code = "agent_error"
    http_status = 502


class DriverError(CorralError):
    code = "driver_error"
    http_status = 500


class InjectedFault(DriverError):
    code = "injected_fault"


class StorageError(CorralError):
    code = "storage_error"
    http_status = 500


class NetworkError(CorralError):
    """A host's virtual network (Open vSwitch, DHCP, firewall flows) could not be set up."""

    code = "network_error"
    http_status = 500


class Timeout(CorralError):
    code = "timeout"
    http_status = 504
