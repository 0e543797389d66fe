"""What task code imports (re-exported from ``torpor``)."""

from torpor.sdk._context import RunContext, context
from torpor.sdk._misc import logger, metadata
from torpor.sdk._task import Retry, Task, TaskDefinition, TaskResult, registered_tasks, task
from torpor.sdk._wait import Token, WaitTimeout, checkpoint, checkpoint_async, wait

__all__ = [
    "Retry",
    "RunContext",
    "Task",
    "TaskDefinition",
    "TaskResult",
    "Token",
    "WaitTimeout",
    "checkpoint",
    "checkpoint_async",
    "context",
    "logger",
    "metadata",
    "registered_tasks",
    "task",
    "wait",
]
