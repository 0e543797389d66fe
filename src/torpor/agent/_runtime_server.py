"""The agent's end of one container's runtime socket.

One request per connection. Before a dump the server is paused: the socket
file disappears (the SDK retries a missing socket with backoff), and the pause
returns only once no connection is open, because CRIU refuses to dump a unix
socket connected to a peer outside the container.

Bounds (agent/_bounds.py): at most ``connections_per_run`` connections of this
run and ``connections_total`` of the whole agent (a semaphore every run's
server shares) are served at once, one thread each; further connections wait
unaccepted in the listen backlog, and past it in the task's own connect(). A
request must arrive whole within ``read_timeout`` seconds. A frame over its
kind's limit is answered with a LimitExceeded without being read.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from google.protobuf.message import DecodeError

from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent._bounds import AgentBounds, frame_too_big, kind_of
from torpor.sdk._wire import SOCKET_NAME, send_frame

log = logging.getLogger(__name__)

Handler = Callable[[rt.RuntimeRequest], rt.RuntimeResponse]
BACKLOG = 16
# A task refusing to behave must not fill the agent's own log either: one line per kind of trouble and run
# at most this often, counting the ones in between.
LOG_EVERY = 60.0


class _Stalled(Exception):
    """The task did not deliver its request (or take its answer) within the read timeout."""


STAGING_NAME = SOCKET_NAME + ".new"
"""Where a socket is bound before it is renamed to its name (see RuntimeServer.start)."""


class RuntimeServer:
    def __init__(self, socket_dir: Path, handler: Handler, *, name: str = "", bounds: AgentBounds | None = None,
                 gate: threading.Semaphore | None = None) -> None:
        self.path = socket_dir / SOCKET_NAME
        self.handler = handler
        self.name = name
        self.bounds = bounds or AgentBounds()
        self._mine = threading.BoundedSemaphore(self.bounds.connections_per_run)
        # Shared by the servers of every run of the agent: the total bound.
        self._gate = gate if gate is not None else threading.BoundedSemaphore(self.bounds.connections_total)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._active = 0
        self._cond = threading.Condition()
        self._closed = False
        self._quiet: dict[str, tuple[float, int]] = {}  # kind of trouble -> (next line due, lines held back)

    def _warn(self, trouble: str, message: str) -> None:
        now = time.monotonic()
        with self._cond:
            due, held = self._quiet.get(trouble, (0.0, 0))
            if now < due:
                self._quiet[trouble] = (due, held + 1)
                return
            self._quiet[trouble] = (now + LOG_EVERY, 0)
        more = f" ({held} more like it since the last such line)" if held else ""
        log.warning("run %s: %s%s", self.name, message, more)

    def start(self) -> None:
        with self._cond:
            if self._listener is not None or self._closed:
                return
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            # The socket appears under its name only once the task may connect to it and it listens: bound
            # under another name, opened to all (the directory, 0770 and the task's, is the access check),
            # listening, then renamed into place. A task connecting in between would otherwise get EACCES
            # (bound, not yet chmod-ed), which it does not retry, as it retries a missing socket.
            staging = self.path.with_name(STAGING_NAME)
            staging.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(staging))
            os.chmod(staging, 0o777)
            sock.listen(BACKLOG)
            os.replace(staging, self.path)
            self._listener = sock
            self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                                            name=f"runtime-{self.name}")
            self._thread.start()

    def pause(self, timeout: float = 60.0) -> bool:
        """Stop accepting and wait until no connection is open; False if one stayed open."""
        with self._cond:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout=timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        self.pause(timeout=5)

    def _listening(self, listener: socket.socket) -> bool:
        with self._cond:
            return self._listener is listener

    def _permit(self, sem: threading.Semaphore, listener: socket.socket) -> bool:
        """Wait for a permit while ``listener`` is still the one serving; False once paused or closed."""
        while not sem.acquire(timeout=0.2):
            if not self._listening(listener):
                return False
        return True

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            # This run's permit first: a connection over its bound stays unaccepted, costing the agent nothing.
            if not self._permit(self._mine, listener):
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                self._mine.release()
                return  # paused or closed
            # The agent's permit once there is a connection to serve (an idle run holds none of them): while
            # the agent is at its total, this run holds one accepted connection, unread, and accepts no other.
            if not self._permit(self._gate, listener):
                conn.close()
                self._mine.release()
                return
            with self._cond:
                self._active += 1
            try:
                threading.Thread(target=self._serve, args=(conn,), daemon=True, name=f"runtime-conn-{self.name}").start()
            except RuntimeError:  # no thread to be had: refuse this one, keep serving
                log.exception("cannot start a thread for a runtime connection")
                conn.close()
                self._done()

    def _done(self) -> None:
        self._mine.release()
        self._gate.release()
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _read(self, conn: socket.socket, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Stalled(f"{len(buf)} of {n} bytes arrived in {self.bounds.read_timeout:g} s")
            conn.settimeout(left)
            try:
                chunk = conn.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("runtime socket closed mid-message")
            buf += chunk
        return bytes(buf)

    def _answer(self, conn: socket.socket, resp: rt.RuntimeResponse) -> None:
        conn.settimeout(self.bounds.read_timeout)  # a task that never reads its answer does not hold the thread
        send_frame(conn, resp.SerializeToString())

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                deadline = time.monotonic() + self.bounds.read_timeout
                (length,) = struct.unpack(">I", self._read(conn, 4, deadline))
                first = self._read(conn, 1, deadline) if length else b""
                kind = kind_of(first[0]) if first else None
                if length > self.bounds.frame_limit(kind):
                    # Refused unread: the answer goes back, and closing tells the sender to stop.
                    self._warn("too big", f"refused a {kind or 'malformed'} runtime request of {length} bytes "
                                          f"(limit {self.bounds.frame_limit(kind)})")
                    self._answer(conn, frame_too_big(kind, length, self.bounds))
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                req = rt.RuntimeRequest()
                try:
                    req.ParseFromString(first + self._read(conn, length - len(first), deadline))
                except DecodeError as exc:
                    self._answer(conn, rt.RuntimeResponse(error=f"malformed runtime request: {exc}"))
                    return
                resp = self.bounds.check(req)
                if resp is None:
                    try:
                        resp = self.handler(req)
                    except Exception as exc:  # noqa: BLE001 - the SDK raises it in the task
                        log.exception("runtime request %s failed", req.WhichOneof("msg"))
                        resp = rt.RuntimeResponse(error=f"agent failed the {req.WhichOneof('msg')} request: {exc}")
                self._answer(conn, resp)
        except _Stalled as exc:
            self._warn("stalled", f"runtime connection dropped: the request did not arrive whole ({exc})")
        except (OSError, ConnectionError) as exc:
            log.debug("runtime connection ended: %s", exc)
        finally:
            self._done()
