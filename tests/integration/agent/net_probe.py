"""Runs inside a container: serves a port on its own loopback and probes addresses, printing what it saw.

argv: PORT TARGET... — each TARGET is host:port. Prints "serving PORT", then for
each target "probe host:port ok|refused|unreachable|timeout <reply>", then keeps
serving and, every 0.2 s, "self ok" after a round trip to its own server.
"""

import socket
import sys
import threading
import time

port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(16)


def serve():
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"hello from " + socket.gethostname().encode() + b"\n")


threading.Thread(target=serve, daemon=True).start()
print("serving", port, flush=True)


def probe(target):
    host, p = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(p)), timeout=2) as s:
            return "ok " + s.recv(64).decode().strip().replace(" ", "_")
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return "unreachable " + type(exc).__name__


for target in sys.argv[2:]:
    print("probe", target, probe(target), flush=True)
print("probed", flush=True)
n = 0
while True:
    n += 1
    print("self", n, probe(f"127.0.0.1:{port}"), flush=True)
    time.sleep(0.2)
