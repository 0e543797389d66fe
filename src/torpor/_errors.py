"""One root for every error torpor raises, with a code that maps to gRPC status."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # grpc is not imported at run time: this module also runs inside containers
    import grpc


class ErrorCode(enum.Enum):
    """What kind of failure an error is; each maps to one gRPC status code."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    ABORTED = "aborted"
    INTERNAL = "internal"

    @property
    def grpc_status(self) -> "grpc.StatusCode":
        import grpc

        return getattr(grpc.StatusCode, self.name)

    @classmethod
    def from_grpc(cls, status: "grpc.StatusCode") -> "ErrorCode":
        return cls.__members__.get(status.name, cls.INTERNAL)


class TorporError(Exception):
    """Root of every torpor error. ``code`` says what kind of failure it is."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(TorporError):
    """A setting or an argument is wrong; the message says which and how to fix it."""

    code = ErrorCode.INVALID_ARGUMENT


class LimitExceeded(TorporError):
    """A bound refused a request: ``what`` went over ``limit`` (the request came to ``actual``).

    Raised in task code when its metadata, result, trigger request or number of
    children is over what the agent or coordinator accepts; nothing already
    stored is changed. ``setting`` names the option that changes the limit.
    """

    code = ErrorCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, what: str, limit: int, actual: int, setting: str = "") -> None:
        super().__init__(message)
        self.what = what
        self.limit = limit
        self.actual = actual
        self.setting = setting


class StoreError(TorporError):
    """The snapshot/bundle store failed (S3 or the local directory)."""

    code = ErrorCode.UNAVAILABLE


class NotFoundError(TorporError):
    code = ErrorCode.NOT_FOUND


class IntegrityError(TorporError):
    """Stored data does not match its recorded size or sha256, or fails authentication: it is never used."""

    code = ErrorCode.FAILED_PRECONDITION


class MissingKeyError(IntegrityError):
    """A snapshot is sealed under a key-encryption key this process was not given (``kek_id`` names it).

    Not the snapshot's fault: it opens once the key is supplied.
    """

    def __init__(self, message: str, *, kek_id: str) -> None:
        super().__init__(message)
        self.kek_id = kek_id


class ContainerError(TorporError):
    """runc refused or failed an operation."""

    code = ErrorCode.INTERNAL


class CriuError(ContainerError):
    """CRIU failed. ``log_excerpt`` quotes the Error lines of its log; ``log_path`` keeps all of it."""

    def __init__(self, message: str, *, log_path: str | None = None, log_excerpt: str = "") -> None:
        full = message
        if log_excerpt:
            full += "\n" + log_excerpt
        if log_path:
            full += f"\n(full CRIU log: {log_path})"
        super().__init__(full)
        self.log_path = log_path
        self.log_excerpt = log_excerpt


class RPCError(TorporError):
    """A call to the coordinator failed; ``code`` is the gRPC status mapped to ErrorCode."""
