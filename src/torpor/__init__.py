"""torpor: durable Python tasks that sleep as CRIU snapshots instead of holding compute."""

from torpor._errors import (
    ConfigError,
    ContainerError,
    CriuError,
    ErrorCode,
    IntegrityError,
    NotFoundError,
    RPCError,
    StoreError,
    TorporError,
)
from torpor._version import __version__

__all__ = [
    "ConfigError",
    "ContainerError",
    "CriuError",
    "ErrorCode",
    "IntegrityError",
    "NotFoundError",
    "RPCError",
    "StoreError",
    "TorporError",
    "__version__",
]
