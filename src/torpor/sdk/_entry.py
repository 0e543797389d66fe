"""The first process of every run's container: fetch the run, call the task, report.

Started by the agent as ``python3 -m torpor.sdk._entry``. SIGUSR1 is blocked
before any user code is imported, so every thread the task starts inherits
the mask and the agent's wake-up signal always lands in a wait.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import importlib
import inspect
import json
import sys
import traceback

from torpor.sdk import _runtime


# A failure's error and traceback are clipped to these many bytes so that its report always fits the agent's
# result limit (agent/_bounds.py leaves 256 KiB for them); the traceback keeps its end, where the error is.
ERROR_BYTES = 16 << 10
TRACEBACK_BYTES = 64 << 10


def _clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    note = f"[... {len(data) - limit:,} bytes clipped ...]"
    part = data[-limit:] if keep_end else data[:limit]
    kept = part.decode(errors="ignore")
    return f"{note}\n{kept}" if keep_end else f"{kept}{note}"


def _report(ok: bool, output_json: str = "", error: str = "", tb: str = "", final: bool = False) -> None:
    from torpor._errors import LimitExceeded
    from torpor._proto.v1 import runtime_pb2 as rt

    result = rt.RuntimeResult(ok=ok, output_json=output_json, error=_clip(error, ERROR_BYTES),
                              traceback=_clip(tb, TRACEBACK_BYTES, keep_end=True), final=final)
    try:
        _runtime.call(rt.RuntimeRequest(result=result))
    except LimitExceeded as exc:
        # The output is over the agent's limit: the attempt fails, and its error says why.
        _runtime.call(rt.RuntimeRequest(result=rt.RuntimeResult(ok=False, error=str(exc))))


async def _awaited(awaitable):  # type: ignore[no-untyped-def]
    return await awaitable


def main() -> int:
    _runtime.block_wake_signal()
    from torpor._proto.v1 import runtime_pb2 as rt
    from torpor.sdk import _context
    from torpor.sdk._misc import _setup_task_logging

    ctx = _runtime.call(rt.RuntimeRequest(context=rt.GetRunContext())).context
    _context._set(
        _context.RunContext(
            run_id=ctx.run_id,
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            version=ctx.version,
            started_at=_dt.datetime.fromtimestamp(ctx.started_at_unix, _dt.timezone.utc),
        )
    )
    _setup_task_logging()
    try:
        module = importlib.import_module(ctx.module)
        target = module
        for part in ctx.function.split("."):
            target = getattr(target, part)
        fn = getattr(target, "fn", target)  # a Task object wraps the function
        payload = json.loads(ctx.payload_json) if ctx.payload_json else None
        typed = getattr(target, "payload_type", None)
    except BaseException as exc:  # noqa: BLE001 - reported as the attempt's failure
        _report(False, error=f"cannot load task {ctx.task_id} ({ctx.module}.{ctx.function}): "
                f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())
        return 1
    if typed is not None:
        from torpor.sdk._payload import PayloadError, convert

        try:
            payload = convert(typed, payload)
        except PayloadError as exc:
            _report(False, error=str(exc), final=True)  # the same payload fails every attempt
            return 1
    try:
        output = fn(payload)
        if inspect.isawaitable(output):
            # An async def task: its own event loop, in the main thread, for the whole run.
            output = asyncio.run(_awaited(output))
    except BaseException as exc:  # noqa: BLE001 - any exception is the task's failure
        _report(False, error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())
        return 1
    try:
        output_json = json.dumps(output)
    except (TypeError, ValueError) as exc:
        _report(False, error=f"the task returned a value that is not JSON-serialisable "
                f"({type(output).__name__}): {exc}; return dicts, lists, strings, numbers, booleans or None")
        return 1
    _report(True, output_json=output_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
