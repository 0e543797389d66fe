"""The agent's end of one container's runtime socket.

One request per connection. Before a dump the server is paused: the socket
file disappears (the SDK retries a missing socket with backoff), and the pause
returns only once no connection is open, because CRIU refuses to dump a unix
socket connected to a peer outside the container.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable

from torpor._proto.v1 import runtime_pb2 as rt
from torpor.sdk._wire import SOCKET_NAME, recv_frame, send_frame

log = logging.getLogger(__name__)

Handler = Callable[[rt.RuntimeRequest], rt.RuntimeResponse]


class RuntimeServer:
    def __init__(self, socket_dir: Path, handler: Handler, *, name: str = "") -> None:
        self.path = socket_dir / SOCKET_NAME
        self.handler = handler
        self.name = name
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._active = 0
        self._cond = threading.Condition()
        self._closed = False

    def start(self) -> None:
        with self._cond:
            if self._listener is not None or self._closed:
                return
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(self.path))
            # The directory (0770, owned by the task's user) is the access check.
            os.chmod(self.path, 0o777)
            sock.listen(16)
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

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # paused or closed
            with self._cond:
                self._active += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(300)
                req = rt.RuntimeRequest()
                req.ParseFromString(recv_frame(conn))
                try:
                    resp = self.handler(req)
                except Exception as exc:  # noqa: BLE001 - the SDK raises it in the task
                    log.exception("runtime request %s failed", req.WhichOneof("msg"))
                    resp = rt.RuntimeResponse(error=f"agent failed the {req.WhichOneof('msg')} request: {exc}")
                send_frame(conn, resp.SerializeToString())
        except (OSError, ConnectionError) as exc:
            log.debug("runtime connection ended: %s", exc)
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()
