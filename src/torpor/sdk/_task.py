"""``@task``, ``Retry`` and what a task object can do."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torpor._errors import ConfigError, ErrorCode, TorporError
from torpor._sizes import parse_size
from torpor.sdk._payload import payload_type, schema_of

NETWORK_MODES = ("egress", "none", "host")

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_REGISTRY: dict[str, "Task"] = {}


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How a task is retried after it raises. Delay before attempt n+1:
    ``min(max_timeout, min_timeout * factor ** (n - 1))``, times a random
    factor in [1, 2) when ``randomize``."""

    max_attempts: int = 3
    """Attempts in all, the first included (1 = never retry)."""
    factor: float = 2.0
    """Growth of the delay from one attempt to the next."""
    min_timeout: float = 1.0
    """Seconds before the second attempt."""
    max_timeout: float = 60.0
    """Longest delay in seconds."""
    randomize: bool = True
    """Spread retries of many runs apart (jitter)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"Retry(max_attempts={self.max_attempts}): must be at least 1")
        if self.factor < 1:
            raise ConfigError(f"Retry(factor={self.factor}): must be >= 1")
        if self.min_timeout < 0 or self.max_timeout < self.min_timeout:
            raise ConfigError(
                f"Retry(min_timeout={self.min_timeout}, max_timeout={self.max_timeout}): need 0 <= min_timeout <= max_timeout"
            )


@dataclass(frozen=True)
class TaskResult:
    """What ``trigger_and_wait`` returns: the child's output, or its error."""

    ok: bool
    output: Any = None
    error: str | None = None
    run_id: str = ""

    def unwrap(self) -> Any:
        """The output; raises TorporError with the child's error when it failed."""
        if not self.ok:
            raise TorporError(f"child run {self.run_id} failed: {self.error}")
        return self.output


@dataclass(frozen=True, kw_only=True)
class TaskDefinition:
    id: str
    module: str
    function: str
    retry: Retry
    max_duration: float | None
    queue: str | None
    concurrency_limit: int | None
    checkpoint_every: float | None
    memory_bytes: int | None
    cpus: float | None
    network: str | None = None
    payload_schema: str = ""
    """JSON schema of the typed parameter (sdk/_payload.py); "" = any JSON."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "module": self.module,
            "function": self.function,
            "retry": {
                "max_attempts": self.retry.max_attempts,
                "factor": self.retry.factor,
                "min_timeout": self.retry.min_timeout,
                "max_timeout": self.retry.max_timeout,
                "randomize": self.retry.randomize,
            },
            "max_duration": self.max_duration or 0,
            "queue": self.queue or "",
            "concurrency_limit": self.concurrency_limit or 0,
            "checkpoint_every": self.checkpoint_every or 0,
            "memory_bytes": self.memory_bytes or 0,
            "cpus": self.cpus or 0,
            "network": self.network or "",
            "payload_schema": self.payload_schema,
        }


class Task:
    """A function registered with ``@task``. Calling it runs the function here."""

    def __init__(self, fn: Callable[[Any], Any], definition: TaskDefinition) -> None:
        self.fn = fn
        self.definition = definition
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", definition.id)
        self.__wrapped__ = fn
        self.payload_type = payload_type(fn)

    @property
    def id(self) -> str:
        return self.definition.id

    def __call__(self, payload: Any) -> Any:
        """Run the function here (an ``async def`` task returns its coroutine, to await)."""
        return self.fn(payload)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __repr__(self) -> str:
        return f"<torpor task {self.id!r} {self.definition.module}.{self.definition.function}>"

    def trigger(self, payload: Any = None, *, idempotency_key: str | None = None, tags: Sequence[str] = (),
                client: Any = None) -> str:
        """Start a run of this task and return its id without waiting.

        Inside a run the new run is a child of the current one. Outside a run,
        pass ``client=torpor.Client(...)``.
        """
        return self._trigger_many([payload], idempotency_key=idempotency_key, tags=tags, client=client)[0]

    def batch_trigger(self, payloads: Sequence[Any], *, tags: Sequence[str] = (), client: Any = None) -> list[str]:
        return self._trigger_many(list(payloads), idempotency_key=None, tags=tags, client=client)

    def _trigger_many(self, payloads: list[Any], *, idempotency_key: str | None, tags: Sequence[str],
                      client: Any) -> list[str]:
        from torpor.sdk._context import in_run

        encoded = [_encode_payload(p) for p in payloads]
        if client is not None:
            return [
                client.trigger(self.id, p, idempotency_key=idempotency_key, tags=list(tags)).run_id for p in encoded
            ]
        if not in_run():
            raise TorporError(
                f"{self.id}.trigger() outside a run needs a client: "
                f"{self.__name__}.trigger(payload, client=torpor.Client(address, api_key=...))",
                code=ErrorCode.FAILED_PRECONDITION,
            )
        from torpor._proto.v1 import runtime_pb2 as rt
        from torpor.sdk._runtime import call

        items = [
            rt.RuntimeTriggerItem(task=self.id, payload_json=p, idempotency_key=idempotency_key or "", tags=list(tags))
            for p in encoded
        ]
        return list(call(rt.RuntimeRequest(trigger=rt.RuntimeTrigger(items=items))).triggered.run_ids)

    async def trigger_async(self, payload: Any = None, *, idempotency_key: str | None = None,
                            tags: Sequence[str] = (), client: Any = None) -> str:
        """``trigger`` for ``async def`` tasks (the request runs in a thread; the event loop goes on)."""
        return await asyncio.to_thread(self.trigger, payload, idempotency_key=idempotency_key, tags=tags,
                                       client=client)

    async def batch_trigger_async(self, payloads: Sequence[Any], *, tags: Sequence[str] = (),
                                  client: Any = None) -> list[str]:
        return await asyncio.to_thread(self.batch_trigger, payloads, tags=tags, client=client)

    async def trigger_and_wait_async(self, payload: Any = None, *, idempotency_key: str | None = None,
                                     tags: Sequence[str] = ()) -> TaskResult:
        """``trigger_and_wait`` for ``async def`` tasks: the task's other coroutines go on while it waits."""
        return await asyncio.to_thread(self.trigger_and_wait, payload, idempotency_key=idempotency_key, tags=tags)

    async def batch_trigger_and_wait_async(self, payloads: Sequence[Any], *,
                                           tags: Sequence[str] = ()) -> list[TaskResult]:
        return await asyncio.to_thread(self.batch_trigger_and_wait, payloads, tags=tags)

    def trigger_and_wait(self, payload: Any = None, *, idempotency_key: str | None = None,
                         tags: Sequence[str] = ()) -> TaskResult:
        """Start a child run and suspend this run until it finishes (no compute held meanwhile)."""
        from torpor.sdk._wait import wait_for_runs

        run_id = self.trigger(payload, idempotency_key=idempotency_key, tags=tags)
        return wait_for_runs([run_id])[0]

    def batch_trigger_and_wait(self, payloads: Sequence[Any], *, tags: Sequence[str] = ()) -> list[TaskResult]:
        """Start one child run per payload; suspend until all finish; results in order."""
        from torpor.sdk._wait import wait_for_runs

        if not payloads:
            return []
        return wait_for_runs(self.batch_trigger(payloads, tags=tags))


def _encode_payload(payload: Any) -> str:
    if hasattr(payload, "model_dump") and not isinstance(payload, type):  # a pydantic model
        payload = payload.model_dump(mode="json")
    elif dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        payload = dataclasses.asdict(payload)
    try:
        return json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"payload is not JSON-serialisable: {exc}") from exc


_MIN_MEMORY = 16 << 20  # below this a Python process does not start


def _memory(task_id: str, memory: int | str | None, memory_mb: int | None) -> int | None:
    if memory is not None and memory_mb is not None:
        raise ConfigError(f"task {task_id!r}: give memory= or memory_mb=, not both")
    if memory_mb is not None:
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb <= 0:
            raise ConfigError(f"task {task_id!r}: memory_mb={memory_mb!r} must be a positive integer (or None)")
        memory = memory_mb << 20
    if memory is None:
        return None
    try:
        n = parse_size(memory)
    except ValueError as exc:
        raise ConfigError(f"task {task_id!r}: memory={memory!r}: {exc}") from None
    if n < _MIN_MEMORY:
        raise ConfigError(f"task {task_id!r}: memory={memory!r} is below 16 MiB, too little for a Python process")
    return n


def task(
    *,
    id: str,
    retry: Retry | None = None,
    max_duration: float | None = None,
    queue: str | None = None,
    concurrency_limit: int | None = None,
    checkpoint_every: float | None = None,
    memory: int | str | None = None,
    memory_mb: int | None = None,
    cpus: float | None = None,
    network: str | None = None,
) -> Callable[[Callable[[Any], Any]], Task]:
    """Declare a task. Options are checked when the module is imported.

    ``max_duration``: seconds of execution per attempt (waits excluded).
    ``queue``/``concurrency_limit``: at most that many runs of the queue at once.
    ``checkpoint_every``: seconds between leave-running checkpoints (crash recovery points).
    ``memory``: the run's memory limit, bytes or a size such as ``"512MiB"`` or ``"2GiB"`` (swap included;
    past it the run is killed and ends OUT_OF_MEMORY); the coordinator places the run only on an agent with that
    much memory not promised to other runs. ``memory_mb`` is the same in MiB. ``cpus``: a CPU quota (1.5 = one
    and a half cores). Neither set: no limit.
    ``network``: ``"egress"`` (outbound connections only; nothing on the host nor other runs),
    ``"none"`` (its own loopback only) or ``"host"`` (the host's network; the agent must allow it).
    Default: the agent's (egress unless its operator chose otherwise).
    """
    if not isinstance(id, str) or not _ID.match(id):
        raise ConfigError(f"task id {id!r}: use 1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
    for name, value in (("max_duration", max_duration), ("checkpoint_every", checkpoint_every), ("cpus", cpus)):
        if value is not None and value <= 0:
            raise ConfigError(f"task {id!r}: {name}={value} must be positive (or None)")
    memory_bytes = _memory(id, memory, memory_mb)
    if concurrency_limit is not None and (not isinstance(concurrency_limit, int) or concurrency_limit <= 0):
        raise ConfigError(f"task {id!r}: concurrency_limit={concurrency_limit!r} must be a positive integer (or None)")
    if network is not None and network not in NETWORK_MODES:
        raise ConfigError(f"task {id!r}: network={network!r}: use one of {', '.join(map(repr, NETWORK_MODES))} (or None)")
    if retry is not None and not isinstance(retry, Retry):
        raise ConfigError(f"task {id!r}: retry must be a torpor.Retry, not {type(retry).__name__}")

    def decorate(fn: Callable[[Any], Any]) -> Task:
        if not callable(fn):
            raise ConfigError(f"@task(id={id!r}) must decorate a function")
        typed = payload_type(fn)
        definition = TaskDefinition(
            id=id,
            module=fn.__module__,
            function=fn.__qualname__,
            retry=retry or Retry(),
            max_duration=max_duration,
            queue=queue,
            concurrency_limit=concurrency_limit,
            checkpoint_every=checkpoint_every,
            memory_bytes=memory_bytes,
            cpus=cpus,
            network=network,
            payload_schema=json.dumps(schema_of(typed), sort_keys=True) if typed is not None else "",
        )
        existing = _REGISTRY.get(id)
        if existing is not None and (existing.definition.module, existing.definition.function) != (
            definition.module, definition.function,
        ):
            raise ConfigError(
                f"duplicate task id {id!r}: {existing.definition.module}.{existing.definition.function} "
                f"and {definition.module}.{definition.function}"
            )
        t = Task(fn, definition)
        _REGISTRY[id] = t
        return t

    return decorate


def registered_tasks() -> dict[str, Task]:
    return dict(_REGISTRY)
