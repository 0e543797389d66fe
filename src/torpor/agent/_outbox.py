"""The agent's side of the report protocol: numbering, acknowledgements, replay, heartbeats on time.

Every report (everything but Register, Heartbeat, ChildTrigger and CommandAck) gets the
next number of this agent process (its incarnation) and is kept until the
coordinator's ReportAck covers it; the coordinator sends that ack only after
the report's transaction has committed, and applies each number once. After
a reconnect the stream starts with Register, then every report not yet
acknowledged, in order, so a report in flight when a stream or a coordinator
died takes effect exactly once. Heartbeats are never held up by a long queue
of reports: the lease is renewed by them alone.

The other way, commands from the coordinator's outbox carry their ``cmd_id``
and are sent again on a new stream until acknowledged: each is acknowledged
on arrival and taken once (``take_command``).

Memory is bounded without ever losing a report that matters. Logs are held
up to ``log_bytes`` (``send_log`` refuses past it, before numbering, so the
numbers stay without gaps; agent/_logs.py counts what was refused and says so
in a marker line). A metadata update replaces the one of the same run not yet
numbered: metadata is whole each time, so only a value nobody would read is
skipped; an update is numbered when a stream has nothing older to send (and
less than ``metadata_bytes`` of updates are unacknowledged) or just before the
next report of its run, so it is never applied after that run's exit.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Callable, Iterator

from torpor._proto.v1 import agent_pb2 as ap

# Messages that are not reports: never numbered, never sent again. A ChildTrigger is a question the task
# waits on (with a timeout), answered on the stream that carried it.
_UNNUMBERED = frozenset({"register", "heartbeat", "child_trigger", "command_ack"})
# How many command ids are remembered to recognise one sent again (far more than can be in flight).
_SEEN_COMMANDS = 10_000


class Outbox:
    def __init__(self, *, log_bytes: int = 64 << 20, metadata_bytes: int = 4 << 20) -> None:
        self.max_log_bytes = log_bytes
        self.max_metadata_bytes = metadata_bytes
        self._log_bytes = 0  # of the log reports not yet acknowledged
        self._metadata_bytes = 0  # of the metadata reports not yet acknowledged
        self._metadata: dict[str, ap.AgentMessage] = {}  # run id -> its newest update, not yet numbered
        self.incarnation = uuid.uuid4().hex
        self._others: collections.deque[ap.AgentMessage] = collections.deque()
        self._closed = False
        self._seq = 0
        self._unacked: dict[int, ap.AgentMessage] = {}
        self._lock = threading.Condition()
        self._acked_upto = 0
        self._seen: dict[int, None] = {}  # command ids taken, oldest first

    def send(self, msg: ap.AgentMessage) -> int:
        """Queue ``msg``; its number (0 for messages that are not reports).

        Reports stay in ``_unacked`` until acknowledged and each stream walks
        them with a cursor of its own: a stream that died while its sender was
        waiting for the next message cannot take one away from the stream
        that replaced it. Other messages go to a queue any stream may take
        from (lost with a dead stream: a CommandAck is answered by the command
        coming again, a ChildTrigger by the task's timeout).
        """
        kind = msg.WhichOneof("msg")
        with self._lock:
            if kind == "metadata":
                self._metadata[msg.metadata.run.run_id] = msg
            elif kind not in _UNNUMBERED:
                run = getattr(getattr(msg, kind), "run", None)
                if run is not None and run.run_id in self._metadata:
                    self._number(self._metadata.pop(run.run_id))
                self._number(msg)
            else:
                self._others.append(msg)
            self._lock.notify_all()
        return msg.seq

    def send_log(self, *msgs: ap.AgentMessage, force: bool = False) -> bool:
        """Queue LogData reports, all or none: none if the logs held would pass ``log_bytes``, unless ``force``."""
        with self._lock:
            if not force and self._log_bytes + sum(len(m.log.data) for m in msgs) > self.max_log_bytes:
                return False
            for msg in msgs:
                self._number(msg)
            self._lock.notify_all()
        return True

    def _number(self, msg: ap.AgentMessage) -> None:
        self._seq += 1
        msg.seq = self._seq
        self._unacked[msg.seq] = msg
        self._account(msg, 1)

    def _account(self, msg: ap.AgentMessage, sign: int) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "log":
            self._log_bytes += sign * len(msg.log.data)
        elif kind == "metadata":
            self._metadata_bytes += sign * len(msg.metadata.metadata_json)

    def held_bytes(self) -> tuple[int, int]:
        """(log bytes, metadata bytes) of reports not yet acknowledged; for tests and diagnostics."""
        with self._lock:
            return self._log_bytes, self._metadata_bytes

    def send_confirmed(self, msg: ap.AgentMessage, timeout: float) -> bool:
        """Send a report and wait until the coordinator has committed it; False on timeout."""
        return self.wait_acked(self.send(msg), timeout)

    def wait_acked(self, seq: int, timeout: float) -> bool:
        """Wait until the coordinator has committed report ``seq``; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._acked_upto >= seq, timeout)

    def acked(self, seq: int) -> None:
        with self._lock:
            for n in [n for n in self._unacked if n <= seq]:
                self._account(self._unacked.pop(n), -1)
            self._acked_upto = max(self._acked_upto, seq)
            self._lock.notify_all()

    def take_command(self, cmd_id: int) -> bool:
        """Acknowledge command ``cmd_id``; True the first time it arrives, False when it is a resend."""
        self.send(ap.AgentMessage(command_ack=ap.CommandAck(cmd_ids=[cmd_id])))
        with self._lock:
            if cmd_id in self._seen:
                return False
            self._seen[cmd_id] = None
            if len(self._seen) > _SEEN_COMMANDS:
                del self._seen[next(iter(self._seen))]
            return True

    def unacked(self) -> list[ap.AgentMessage]:
        with self._lock:
            return list(self._unacked.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def stream(self, register: Callable[[], ap.AgentMessage], heartbeat: Callable[[], ap.AgentMessage],
               period: Callable[[], float], stopped: threading.Event) -> Iterator[ap.AgentMessage]:
        """What one connection sends: Register, the unacknowledged reports in order, then new ones and heartbeats."""
        yield register()
        cursor = 0  # the last report number this stream sent
        next_beat = time.monotonic() + period()
        while not stopped.is_set():
            with self._lock:
                if self._closed:
                    return
                # Reports are numbered without gaps and acknowledged oldest first: the next one is a lookup.
                report = self._unacked.get(max(cursor, self._acked_upto) + 1)
                if report is None and self._metadata and self._metadata_bytes < self.max_metadata_bytes:
                    # Nothing older left to send: the oldest pending metadata update gets the next number.
                    self._number(self._metadata.pop(next(iter(self._metadata))))
                    report = self._unacked.get(max(cursor, self._acked_upto) + 1)
                other = self._others.popleft() if report is None and self._others else None
                if report is None and other is None:
                    self._lock.wait(max(0.0, min(next_beat - time.monotonic(), 1.0)))
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + period()
                yield heartbeat()
            if report is not None:
                cursor = report.seq
                yield report
            elif other is not None:
                yield other
