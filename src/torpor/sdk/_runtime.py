"""The SDK's side of the runtime socket, and the one way it blocks.

Each request opens a connection, sends one message, reads one answer and
closes, so no connection to the agent is open while CRIU dumps the container.
Waiting is done by blocking on SIGUSR1 (blocked in every thread since the
entrypoint started), which survives a dump and a restore on another host: one
thread takes the signal and wakes every waiter (``_Waker``), so several
threads or coroutines may wait at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from torpor._errors import LimitExceeded, TorporError
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.sdk._wire import SOCKET_NAME, recv_frame, send_frame

SOCKET_DIR = "/run/torpor"
WAKE_SIGNAL = signal.SIGUSR1
# The agent may briefly take its socket away (around a leave-running dump);
# callers retry for this long before giving up.
CONNECT_PATIENCE = 120.0

_socket_path: str | None = None


def socket_path() -> str:
    return _socket_path or os.path.join(os.environ.get("TORPOR_SOCKET_DIR", SOCKET_DIR), SOCKET_NAME)


def set_socket_path(path: str | None) -> None:
    """For tests that run the SDK outside a container."""
    global _socket_path
    _socket_path = path


class RuntimeError_(TorporError):
    """The agent refused or failed a runtime request."""


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    try:
        send_frame(sock, payload)
    except (BrokenPipeError, ConnectionResetError):
        # The agent may have refused the request unread (over its size limit) and closed: its answer
        # waits in this socket. With none there, the connection was lost and the caller tries again.
        pass
    return recv_frame(sock)


def call(request: rt.RuntimeRequest, *, timeout: float = 300.0) -> rt.RuntimeResponse:
    deadline = time.monotonic() + CONNECT_PATIENCE
    delay = 0.01
    payload = request.SerializeToString()
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(socket_path())
            data = _exchange(sock, payload)
            break
        except (FileNotFoundError, ConnectionError, BlockingIOError) as exc:
            # BlockingIOError: the socket's backlog is full, the agent serving this run's other requests.
            if time.monotonic() > deadline:
                raise RuntimeError_(f"cannot reach the torpor agent at {socket_path()}: {exc}") from exc
        finally:
            sock.close()
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    resp = rt.RuntimeResponse()
    resp.ParseFromString(data)
    if resp.error:
        if resp.HasField("limit"):
            lim = resp.limit
            raise LimitExceeded(resp.error, what=lim.what, limit=lim.limit, actual=lim.actual, setting=lim.setting)
        raise RuntimeError_(resp.error)
    return resp


def block_wake_signal() -> None:
    """Block SIGUSR1 in this thread; threads started later inherit the mask.

    The entrypoint calls this before importing user code, so the wake-up
    signal is never delivered to (and never kills) a user thread: it stays
    pending until a wait picks it up with sigtimedwait.
    """
    signal.signal(WAKE_SIGNAL, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {WAKE_SIGNAL})


class _Waker:
    """The one thread that takes the agent's wake-up signals, and tells every waiting thread.

    Several threads (or coroutines, through the ``_async`` calls) may wait at
    once, and one SIGUSR1 says only "some wait of yours has news": each waiter
    records the wake-up count before its request and, once it has moved on,
    asks the agent about its own wait. A signal that comes before anyone waits
    is counted, not lost.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._thread: threading.Thread | None = None

    def count(self) -> int:
        """The number of wake-ups so far (starting the thread on first use)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="torpor-wake", daemon=True)
                self._thread.start()
            return self._count

    def wait_past(self, count: int, timeout: float | None = None) -> int:
        """Block until there were more than ``count`` wake-ups; the count then (unchanged on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._count > count, timeout)
            return self._count

    def _run(self) -> None:
        while True:
            if signal.sigtimedwait({WAKE_SIGNAL}, 3600.0) is not None:
                with self._cond:
                    self._count += 1
                    self._cond.notify_all()

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._thread = None


WAKER = _Waker()
os.register_at_fork(after_in_child=WAKER._after_fork)


def wait_point(request: rt.RuntimeRequest, wait_id: str) -> rt.WaitOutcome:
    """Send a wait (or checkpoint) request, then block until its outcome is ready.

    If this process was restored, on another agent, from a checkpoint taken
    while it blocked here, that agent wakes it and does not know the wait: the
    request goes again with the same wait id, so a short wait re-arms there, a
    wait recorded with the coordinator is found (resolved meanwhile, or not),
    and a ``checkpoint()`` returns, since its image is durable.
    """
    seen = WAKER.count()
    accepted = call(request)
    resolved = accepted.wait_accepted.resolved
    while True:
        if not resolved:
            seen = WAKER.wait_past(seen)
        outcome = call(rt.RuntimeRequest(wait_result=rt.RuntimeWaitResult(wait_id=wait_id))).wait_outcome
        if outcome.ready:
            return outcome
        resolved = False  # news of another wait, or a stale or early wake-up: block again
        if outcome.unknown:
            if request.WhichOneof("msg") == "checkpoint":
                request.checkpoint.after_restore = True
            seen = WAKER.count()
            resolved = call(request).wait_accepted.resolved
