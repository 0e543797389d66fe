"""Framing on the runtime socket: a 4-byte big-endian length, then one protobuf message."""

from __future__ import annotations

import socket
import struct

from torpor._errors import TorporError

SOCKET_NAME = "runtime.sock"
# The largest answer the SDK accepts from the agent (a context carries the payload, a wait outcome the children's
# results). Requests are bounded by the agent, per kind: agent/_bounds.py.
MAX_FRAME = 64 << 20


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("runtime socket closed mid-message")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", _recv_exact(sock, 4))
    if length > MAX_FRAME:
        raise TorporError(f"runtime message of {length} bytes exceeds the {MAX_FRAME} byte limit")
    return _recv_exact(sock, length)
