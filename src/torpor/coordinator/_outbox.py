"""Commands to agents, committed with the state change that caused them, delivered at least once.

``enqueue`` inserts the command in the caller's transaction and notifies;
whichever coordinator holds that agent's stream sends its rows, in order, onto
the stream, each with its row id as ``cmd_id``. A row stays until the agent's
CommandAck names it: a command in flight when a stream or a coordinator went
away is sent again on the agent's next stream, and the agent applies each id
once. A command for an agent that never comes back is dropped when its lease
is declared lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from torpor._proto.v1 import agent_pb2
from torpor.coordinator._db import Cursor, Database

log = logging.getLogger(__name__)


def enqueue(cur: Cursor, agent: str, message: agent_pb2.CoordinatorMessage) -> None:
    cur.execute(
        "INSERT INTO agent_commands (agent, payload) VALUES (%s, %s)",
        (agent, message.SerializeToString()),
    )
    cur.execute("SELECT pg_notify('torpor', %s)", ("cmd:" + agent,))


def kill(cur: Cursor, agent: str | None, run_id: str, generation: int, reason: str) -> None:
    if agent:
        enqueue(cur, agent, agent_pb2.CoordinatorMessage(
            kill=agent_pb2.KillRun(run=agent_pb2.RunRef(run_id=run_id, generation=generation), reason=reason)))


def _pending(cur: Cursor, agent: str, sent: list[int]) -> list[tuple[int, bytes]]:
    """The agent's commands not yet sent on its current stream, in order."""
    cur.execute("SELECT id, payload FROM agent_commands WHERE agent = %s AND NOT (id = ANY(%s)) ORDER BY id",
                (agent, sent))
    return [(r["id"], bytes(r["payload"])) for r in cur.fetchall()]


def acknowledged(cur: Cursor, agent: str, cmd_ids: list[int]) -> list[Any]:
    """The agent has taken these commands: they leave the outbox."""
    cur.execute("DELETE FROM agent_commands WHERE agent = %s AND id = ANY(%s)", (agent, list(cmd_ids)))
    return []


class Deliverer:
    """A thread that drains the outbox of agents connected here, when told to."""

    def __init__(self, db: Database, is_local: Callable[[str], bool], send: Callable[[str, agent_pb2.CoordinatorMessage], bool],
                 sent_ids: Callable[[str], set[int] | None]) -> None:
        self._db = db
        self._is_local = is_local
        self._send = send
        self._sent_ids = sent_ids  # the ids sent on the agent's stream here; None when its stream is elsewhere
        self._pending: set[str] = set()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="torpor-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def kick(self, agent: str) -> None:
        if not self._is_local(agent):
            return
        with self._cv:
            self._pending.add(agent)
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                agents, self._pending = self._pending, set()
            for agent in agents:
                try:
                    self._drain(agent)
                except Exception:  # keep delivering to the others; the periodic kick retries
                    log.exception("delivering commands to agent %s failed", agent)

    def _drain(self, agent: str) -> None:
        sent = self._sent_ids(agent)
        if sent is None:
            return
        # Sent ones stay in the outbox until acknowledged, but go on this stream only once.
        for cmd_id, payload in self._db.run(_pending, agent, list(sent)):
            msg = agent_pb2.CoordinatorMessage()
            msg.ParseFromString(payload)
            msg.cmd_id = cmd_id
            if not self._send(agent, msg):
                log.info("agent %s went away with commands unacknowledged; they go again on its next stream", agent)
                return
            sent.add(cmd_id)
