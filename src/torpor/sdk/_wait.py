"""``wait``: pause a run for a duration, until a date, for a token or for child runs.

Inside a run every wait goes through the agent: a short one is served in
place, a longer one turns the whole container into a snapshot and frees the
host; either way this code just blocks, then returns the wait's value.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from torpor._errors import ConfigError, ErrorCode, TorporError
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.sdk._context import in_run
from torpor.sdk._task import TaskResult


class WaitTimeout(TorporError):
    """A token was not completed before its timeout."""

    code = ErrorCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class Token:
    """A wait token: give ``id`` to whoever completes it (``torpor tokens complete ID``)."""

    id: str
    timeout: float | None = None
    """Seconds from creation after which ``for_token`` raises WaitTimeout; None = never."""
    expires_at: float = 0.0
    """Unix time of that timeout (0 = none)."""


def _need_run(what: str) -> None:
    if not in_run():
        raise TorporError(f"wait.{what}() works only inside a run", code=ErrorCode.FAILED_PRECONDITION)


def _new_id() -> str:
    return uuid.uuid4().hex


def _wait(kind: dict[str, Any]) -> rt.WaitOutcome:
    from torpor.sdk._runtime import wait_point

    wait_id = _new_id()
    return wait_point(rt.RuntimeRequest(wait=rt.RuntimeWait(wait_id=wait_id, **kind)), wait_id)


class _Wait:
    WaitTimeout = WaitTimeout
    Token = Token

    def for_(self, *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> None:
        """Pause for a duration. Long pauses hold no CPU or memory anywhere."""
        total = seconds + 60 * minutes + 3600 * hours + 86400 * days
        if total < 0:
            raise ConfigError(f"wait.for_() needs a duration >= 0, got {total} seconds")
        if not in_run():
            time.sleep(total)
            return
        _wait({"until_unix": time.time() + total})

    def until(self, when: _dt.datetime) -> None:
        """Pause until a timezone-aware datetime."""
        if not isinstance(when, _dt.datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise ConfigError(
                f"wait.until() needs a timezone-aware datetime, got {when!r} "
                "(use datetime.now(timezone.utc) + timedelta(...))"
            )
        if not in_run():
            time.sleep(max(0.0, when.timestamp() - time.time()))
            return
        _wait({"until_unix": when.timestamp()})

    def create_token(self, *, timeout: float | None = None) -> Token:
        """A new token that ``for_token`` can wait on; it can be completed from now on."""
        _need_run("create_token")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"wait.create_token(timeout={timeout}): must be positive seconds or None")
        from torpor.sdk._runtime import call

        expires_at = time.time() + timeout if timeout else 0.0
        resp = call(rt.RuntimeRequest(create_token=rt.RuntimeCreateToken(timeout_seconds=timeout or 0)))
        return Token(id=resp.token.token_id, timeout=timeout, expires_at=expires_at)

    def for_token(self, token: Token | str) -> Any:
        """Pause until the token is completed; returns the data it was completed with.

        Raises ``wait.WaitTimeout`` when the token's timeout passes first.
        """
        _need_run("for_token")
        token_id = token.id if isinstance(token, Token) else str(token)
        expires_at = token.expires_at if isinstance(token, Token) else 0.0
        outcome = _wait({"token_id": token_id, "token_timeout_unix": expires_at})
        if outcome.timed_out:
            raise WaitTimeout(f"token {token_id} was not completed before its timeout")
        return json.loads(outcome.result_json) if outcome.result_json else None


    # Awaitable twins (DBOS's naming): the blocking call runs in a thread, so the event loop and the task's
    # other coroutines go on meanwhile; a suspension freezes the whole process, loop included, and all of
    # it goes on after the restore. Several may wait at once (sdk/_runtime.py, _Waker).

    async def for_async(self, *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> None:
        """``await wait.for_async(...)``: ``for_`` for ``async def`` tasks."""
        await asyncio.to_thread(self.for_, seconds=seconds, minutes=minutes, hours=hours, days=days)

    async def until_async(self, when: _dt.datetime) -> None:
        """``await wait.until_async(when)``: ``until`` for ``async def`` tasks."""
        await asyncio.to_thread(self.until, when)

    async def create_token_async(self, *, timeout: float | None = None) -> Token:
        return await asyncio.to_thread(self.create_token, timeout=timeout)

    async def for_token_async(self, token: Token | str) -> Any:
        """``await wait.for_token_async(token)``: ``for_token`` for ``async def`` tasks."""
        return await asyncio.to_thread(self.for_token, token)


def wait_for_runs(run_ids: list[str]) -> list[TaskResult]:
    outcome = _wait({"children": rt.ChildList(run_ids=run_ids)})
    results = json.loads(outcome.result_json or "[]")
    by_id = {r["run_id"]: r for r in results}
    out = []
    for rid in run_ids:
        r = by_id.get(rid, {"status": "UNKNOWN", "error": "no result reported for this child"})
        ok = r.get("status") == "COMPLETED"
        error = None if ok else (r.get("error") or f"child run ended {r.get('status', 'UNKNOWN')}")
        out.append(TaskResult(ok=ok, output=r.get("output"), error=error, run_id=rid))
    return out


def checkpoint() -> None:
    """Save the run's state now (leave-running); the process goes on once it is durable.

    Outside a run this does nothing.
    """
    if not in_run():
        return
    from torpor.sdk._runtime import wait_point

    wait_id = _new_id()
    wait_point(rt.RuntimeRequest(checkpoint=rt.RuntimeCheckpoint(wait_id=wait_id)), wait_id)


async def checkpoint_async() -> None:
    """``await checkpoint_async()``: ``checkpoint`` for ``async def`` tasks."""
    await asyncio.to_thread(checkpoint)


wait = _Wait()
