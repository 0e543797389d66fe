"""A run's output on its way out: the attempt's log budget, and what a full outbox could not take.

A task that prints without end must not grow the agent's memory or disk, nor
the coordinator's database. Two bounds, each leaving a marker line that says
how many bytes it dropped (``LogData.dropped_bytes`` carries the count, which
the coordinator adds to the attempt's ``log_dropped_bytes``):

- ``LogBudget``: the output one attempt may keep, ``RunSpec.log_budget_bytes``
  (the coordinator's ``--log-budget``), counting what earlier starts and
  restores of the attempt kept (``RunSpec.log_bytes_used``). Past it whole
  lines are dropped before they reach the agent's disk copy or the outbox: a
  notice says so at once, and a marker with the count ends the container's
  output.
- ``LogRelay``: the outbox holds at most ``outbox_log_bytes`` of logs the
  coordinator has not acknowledged (a slow or unreachable coordinator). A
  chunk it cannot take is dropped and counted; the marker goes once there is
  room again, and in any case (forced, a few hundred bytes) when the run's
  container ends. Only logs are dropped: reports always go.
"""

from __future__ import annotations

import threading
from typing import Callable

from torpor._proto.v1 import agent_pb2 as ap
from torpor.agent._bounds import AgentBounds

BUDGET_SETTING = "torpor coordinator --log-budget"
OUTBOX_SETTING = "torpor agent --outbox-log-bytes"

SendLog = Callable[..., bool]
"""The outbox's ``send_log(*msgs, force=False)``: queues all or none; False when full and not forced."""


class LogBudget:
    """The output one container of an attempt may still keep; what is over is dropped and counted."""

    def __init__(self, limit: int, used: int = 0) -> None:
        self.limit = limit
        self._used = used
        self._spent = used >= limit
        self._dropped: dict[str, int] = {}  # by stream, since its last marker
        self._lock = threading.Lock()

    @classmethod
    def of(cls, spec: ap.RunSpec, bounds: AgentBounds) -> "LogBudget":
        """The budget a start or restore of ``spec`` has left (the coordinator's, else the agent's default)."""
        return cls(spec.log_budget_bytes or bounds.log_budget_bytes, spec.log_bytes_used)

    def admit(self, data: bytes, stream: str = "stdout") -> tuple[bytes, bytes]:
        """The part of ``data`` to keep (whole lines), and a notice line if the budget ran out with it."""
        with self._lock:
            if self._spent:
                self._dropped[stream] = self._dropped.get(stream, 0) + len(data)
                return b"", b""
            room = self.limit - self._used
            if len(data) <= room:
                self._used += len(data)
                return data, b""
            cut = data.rfind(b"\n", 0, room) + 1
            self._used += cut
            self._dropped[stream] = self._dropped.get(stream, 0) + len(data) - cut
            self._spent = True
        notice = (f"[torpor] this attempt's output reached its log budget of {self.limit:,} bytes "
                  f"({BUDGET_SETTING}); further output is dropped and counted\n")
        return data[:cut], notice.encode()

    def take_dropped(self, stream: str = "stdout") -> int:
        """Bytes of ``stream`` dropped since the last call (each marker accounts for its own)."""
        with self._lock:
            return self._dropped.pop(stream, 0)

    def marker(self, dropped: int) -> bytes:
        return (f"[torpor] {dropped:,} bytes of output dropped: over this attempt's log budget of {self.limit:,} "
                f"bytes ({BUDGET_SETTING})\n").encode()


def outbox_marker(dropped: int) -> bytes:
    return (f"[torpor] {dropped:,} bytes of output dropped: the agent's outbox was full (the coordinator slow or "
            f"unreachable; {OUTBOX_SETTING})\n").encode()


class LogRelay:
    """Hands one run's output to the outbox; counts what a full outbox could not take."""

    def __init__(self, send_log: SendLog, ref: ap.RunRef, attempt: int) -> None:
        self._send_log = send_log
        self._ref = ref
        self._attempt = attempt
        self._lost = 0  # bytes the outbox refused since the last outbox marker
        self._lock = threading.Lock()

    def relay(self, stream: str, data: bytes, dropped: int = 0) -> None:
        """Queue a chunk; a chunk standing for ``dropped`` bytes (a marker line) always goes.

        After a refusal the outbox marker goes together with the next chunk
        that fits, never alone: a full outbox gets one marker per stretch of
        refusals, not one per chunk refused.
        """
        msgs = [self._msg(stream, data, dropped)]
        with self._lock:
            if self._lost:
                msgs.insert(0, self._msg(stream, outbox_marker(self._lost), self._lost))
            if self._send_log(*msgs, force=dropped > 0):
                self._lost = 0
            else:
                self._lost += len(data)

    def flush(self) -> None:
        """The container's output ended: the marker of what the outbox refused goes now, whatever its room."""
        with self._lock:
            if self._lost:
                self._send_log(self._msg("stderr", outbox_marker(self._lost), self._lost), force=True)
                self._lost = 0

    @property
    def lost(self) -> int:
        with self._lock:
            return self._lost

    def _msg(self, stream: str, data: bytes, dropped: int) -> ap.AgentMessage:
        return ap.AgentMessage(log=ap.LogData(run=self._ref, stream=stream, data=data, attempt=self._attempt,
                                              dropped_bytes=dropped))
