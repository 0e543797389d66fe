"""A hostile task's attack on the agent's runtime socket, from inside its container.

Frames announcing gigabytes (sent from many threads at once), and connections
that send half a frame and then stall. The agent must refuse the first unread
and drop the second at its read timeout, holding only this run's few permits.
Used by the e2e task ``flood-socket`` and, as a script, by
tests/integration/agent/test_runtime_and_log_bounds.py (which copies this file into its app).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time

from torpor._proto.v1 import runtime_pb2 as rt

METADATA_KEY = b"\x32"  # the first byte of a RuntimeRequest carrying metadata (field 6, length-delimited)


def _path() -> str:
    return os.path.join(os.environ.get("TORPOR_SOCKET_DIR", "/run/torpor"), "runtime.sock")


def _answer(s: socket.socket) -> rt.RuntimeResponse | None:
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    resp = rt.RuntimeResponse()
    resp.ParseFromString(body)
    return resp


def huge_frame() -> str:
    """One frame announcing 4 GiB of metadata, 4 MiB of it actually sent; what the agent answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        while True:
            try:
                s.connect(_path())
                break
            except BlockingIOError:  # the backlog is full: the agent serves this run only so many at once
                time.sleep(0.01)
        try:
            s.sendall(struct.pack(">I", 0xFFFFFFFF) + METADATA_KEY + b"x" * (4 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused unread: the answer is waiting
        resp = _answer(s)
    return resp.limit.what if resp is not None and resp.HasField("limit") else "no answer"


def stall(count: int, hold: float) -> int:
    """Open ``count`` connections that send half a frame, hold them, close them; how many the agent dropped first."""
    conns = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        if s.connect_ex(_path()) == 0:
            try:
                s.send(struct.pack(">I", 1000) + METADATA_KEY)
            except OSError:
                pass
            conns.append(s)
        else:
            s.close()  # the backlog is full: the agent is not even looking
    time.sleep(hold)
    dropped = 0
    for s in conns:
        try:
            if s.recv(1) == b"":
                dropped += 1
        except OSError:
            pass
        s.close()
    return dropped


def flood(*, threads: int = 16, frames: int = 4, conns: int = 200, hold: float = 3.0, rounds: int = 0,
          stop_file: str = "") -> None:
    """Flood in rounds (``rounds`` = 0: until ``stop_file`` exists, or forever), one JSON line per round."""
    n = 0
    while not (rounds and n >= rounds) and not (stop_file and os.path.exists(stop_file)):
        n += 1
        answers: list[str] = []

        def burst() -> None:
            for _ in range(frames):
                answers.append(huge_frame())

        workers = [threading.Thread(target=burst) for _ in range(threads)]
        for w in workers:
            w.start()
        dropped = stall(conns, hold)
        for w in workers:
            w.join()
        print(json.dumps({"round": n, "frames": len(answers), "refused": answers.count("metadata"),
                          "stalled_dropped": dropped}), flush=True)


if __name__ == "__main__":
    flood(stop_file=sys.argv[1] if len(sys.argv) > 1 else "")
