"""What one run can make the root agent hold: request sizes, connections, open waits, log bytes.

Task code is user code, sometimes hostile, and the agent serves every run of
its host as root. Each request on the runtime socket is limited by its kind,
read from the first byte of the frame before anything else is read, so a
frame over its limit costs the agent four bytes and an answer. Every refusal
reaches the task as ``torpor.LimitExceeded`` naming the limit, the figure
that went over it and the setting that changes it (docs/security.md, "Bounds").
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torpor._errors import ConfigError
from torpor._proto.v1 import common_pb2 as cm
from torpor._proto.v1 import runtime_pb2 as rt

KiB = 1024
MiB = 1024 * KiB

# Frames of the kinds that carry no user data (context, wait_result, checkpoint, create_token).
CONTROL_FRAME = 64 * KiB
# A wait names the child runs it waits for: thousands of ids fit.
WAIT_FRAME = 1 * MiB
# Room in a result frame for the error and traceback of a failed task (the SDK clips them to fit).
RESULT_SLACK = 256 * KiB
# Room in a metadata frame for the protobuf framing around the JSON.
METADATA_SLACK = 1 * KiB


@dataclass(frozen=True, kw_only=True)
class AgentBounds:
    """Limits that keep one run from making the agent use unbounded memory, threads or storage."""

    max_metadata_bytes: int = 64 * KiB
    """Largest metadata of one run, in bytes of its JSON text; ``metadata.set`` over it raises LimitExceeded."""
    max_result_bytes: int = 4 * MiB
    """Largest output of a task, in bytes of its JSON text; a bigger one fails the attempt with LimitExceeded."""
    max_trigger_bytes: int = 8 * MiB
    """Largest trigger request from a task (a batch's payloads together); a bigger one raises LimitExceeded."""
    connections_per_run: int = 8
    """Runtime connections served at once for one run; more wait, unaccepted, in the socket's backlog."""
    connections_total: int = 128
    """Runtime connections served at once for all the runs of this agent; each holds one thread."""
    read_timeout: float = 30.0
    """Seconds a runtime connection has to deliver its whole request, and again to take the answer."""
    max_open_waits: int = 64
    """Waits and checkpoints one run may have open at once (asked for, and their outcome not yet taken)."""
    outbox_log_bytes: int = 64 * MiB
    """Log bytes held for the coordinator until it acknowledges them; past this, output is dropped and counted."""
    log_budget_bytes: int = 16 * MiB
    """Output one attempt keeps when the coordinator names no budget (a coordinator older than budgets)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"agent bound {f.name} must be positive, got {getattr(self, f.name)!r}")
        if self.connections_total < self.connections_per_run:
            raise ConfigError(f"runtime connections in total ({self.connections_total}) must be at least the "
                              f"connections per run ({self.connections_per_run})")

    def frame_limit(self, kind: str | None) -> int:
        """The largest frame accepted for a request of ``kind`` (None: not a known kind)."""
        if kind == "metadata":
            return self.max_metadata_bytes + METADATA_SLACK
        if kind == "result":
            return self.max_result_bytes + RESULT_SLACK
        if kind == "trigger":
            return self.max_trigger_bytes
        if kind == "wait":
            return WAIT_FRAME
        return CONTROL_FRAME

    def check(self, req: rt.RuntimeRequest) -> rt.RuntimeResponse | None:
        """A refusal when a parsed request's user data is over its bound; None when it may go on."""
        kind = req.WhichOneof("msg")
        if kind == "metadata":
            size = len(req.metadata.metadata_json.encode())
            if size > self.max_metadata_bytes:
                return metadata_too_big(size, self.max_metadata_bytes)
        elif kind == "result" and req.result.ok:
            size = len(req.result.output_json.encode())
            if size > self.max_result_bytes:
                return result_too_big(size, self.max_result_bytes)
        return None


def refusal(message: str, *, what: str, limit: int, actual: int, setting: str = "") -> rt.RuntimeResponse:
    return rt.RuntimeResponse(error=message, limit=cm.LimitExceeded(what=what, limit=limit, actual=actual,
                                                                    setting=setting))


def metadata_too_big(size: int, limit: int, *, unread: bool = False) -> rt.RuntimeResponse:
    sized = f"{size:,} bytes as sent" if unread else f"{size:,} bytes of JSON"
    return refusal(f"metadata of {sized} is over the limit of {limit:,} bytes per run "
                   "(torpor agent --max-metadata-bytes); the metadata stored before is kept. Keep large data "
                   "elsewhere and put a reference in the metadata",
                   what="metadata", limit=limit, actual=size, setting="torpor agent --max-metadata-bytes")


def result_too_big(size: int, limit: int, *, unread: bool = False) -> rt.RuntimeResponse:
    sized = f"{size:,} bytes as sent" if unread else f"{size:,} bytes of JSON"
    return refusal(f"the task's output is {sized}, over the limit of {limit:,} bytes "
                   "(torpor agent --max-result-bytes). Write large output to storage and return a reference",
                   what="result", limit=limit, actual=size, setting="torpor agent --max-result-bytes")


def frame_too_big(kind: str | None, size: int, bounds: AgentBounds) -> rt.RuntimeResponse:
    """The answer to a frame over its kind's limit, sent without reading the frame."""
    limit = bounds.frame_limit(kind)
    if kind == "metadata":
        return metadata_too_big(size, bounds.max_metadata_bytes, unread=True)
    if kind == "result":
        return result_too_big(size, bounds.max_result_bytes, unread=True)
    if kind == "trigger":
        return refusal(f"this trigger request is {size:,} bytes, over the limit of {limit:,} bytes per request "
                       "(torpor agent --max-trigger-bytes); trigger the batch in smaller parts, or pass large "
                       "inputs by reference", what="trigger", limit=limit, actual=size,
                       setting="torpor agent --max-trigger-bytes")
    return refusal(f"a runtime request{f' ({kind})' if kind else ''} of {size:,} bytes is over the {limit:,} byte "
                   "limit of its kind", what="request", limit=limit, actual=size)


def too_many_waits(open_waits: int, limit: int) -> rt.RuntimeResponse:
    return refusal(f"this run already has {open_waits} waits or checkpoints open (asked for, outcome not yet "
                   f"taken); at most {limit} are allowed at once (torpor agent --max-open-waits)",
                   what="waits", limit=limit, actual=open_waits + 1, setting="torpor agent --max-open-waits")


def kind_of(first: int) -> str | None:
    """The request kind a frame's first byte names: the key of its oneof field (field number < 16)."""
    if first & 0x80 or first & 0x07 != 2:  # a longer key, or not a length-delimited field: no kind we know
        return None
    field = rt.RuntimeRequest.DESCRIPTOR.fields_by_number.get(first >> 3)
    return field.name if field is not None else None
