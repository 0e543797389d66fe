"""Where the code is running: ``torpor.context()`` inside a run, an error outside."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from torpor._errors import ErrorCode, TorporError


@dataclass(frozen=True, kw_only=True)
class RunContext:
    run_id: str
    """The run's id (stable across retries, waits and restores)."""
    task_id: str
    """The id given to ``@task``."""
    attempt: int
    """1 for the first attempt; a retry starts a fresh process with attempt + 1."""
    version: str
    """The deployment version the run is pinned to."""
    started_at: _dt.datetime
    """When the run first started; the same after every restore."""


_current: RunContext | None = None


def context() -> RunContext:
    """The current run. Raises TorporError when called outside a run."""
    if _current is None:
        raise TorporError(
            "torpor.context() was called outside a run: it works only in code that torpor runs as a task "
            "(inside the container the agent started)",
            code=ErrorCode.FAILED_PRECONDITION,
        )
    return _current


def in_run() -> bool:
    return _current is not None


def _set(ctx: RunContext | None) -> None:
    global _current
    _current = ctx
