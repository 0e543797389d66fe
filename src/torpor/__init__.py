"""torpor: durable Python tasks that sleep as CRIU snapshots instead of holding compute.

Task code::

    from torpor import task, wait

    @task(id="hello")
    def hello(payload):
        wait.for_(hours=2)          # no CPU or memory held for two hours
        return {"hi": payload["name"]}
"""

from typing import TYPE_CHECKING, Any

from torpor._errors import (
    ConfigError,
    ContainerError,
    CriuError,
    ErrorCode,
    IntegrityError,
    LimitExceeded,
    NotFoundError,
    RPCError,
    StoreError,
    TorporError,
)
from torpor._version import __version__
from torpor.sdk import (
    Retry,
    RunContext,
    Task,
    TaskResult,
    Token,
    WaitTimeout,
    checkpoint,
    checkpoint_async,
    context,
    logger,
    metadata,
    task,
    wait,
)

if TYPE_CHECKING:
    from torpor.client import Client

__all__ = [
    "Client",
    "ConfigError",
    "ContainerError",
    "CriuError",
    "ErrorCode",
    "IntegrityError",
    "LimitExceeded",
    "NotFoundError",
    "RPCError",
    "Retry",
    "RunContext",
    "StoreError",
    "Task",
    "TaskResult",
    "Token",
    "TorporError",
    "WaitTimeout",
    "__version__",
    "checkpoint",
    "checkpoint_async",
    "context",
    "logger",
    "metadata",
    "task",
    "wait",
]


def __getattr__(name: str) -> Any:
    # The gRPC client is imported on first use only: task code inside a
    # container imports torpor without grpc being installed there.
    if name == "Client":
        from torpor.client import Client

        return Client
    raise AttributeError(f"module 'torpor' has no attribute {name!r}")
