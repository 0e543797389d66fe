"""A process with every kind of state a snapshot must carry.

200 MB of heap (half random, half repetitive), two threads, a child process,
an open file with an offset in the tmpfs work directory, and a listening TCP
socket that answers "report" with a JSON description of all of it.
Optionally (OUTSIDE_PORT) an established connection to a server outside.
"""

import hashlib
import json
import os
import random
import socket
import subprocess
import threading
import time

PORT = int(os.environ["PORT"])
HEAP_MB = int(os.environ.get("HEAP_MB", "200"))

half = HEAP_MB // 2
heap = bytearray(random.Random(7).randbytes(half << 20)) + bytearray(b"torpor!!" * ((half << 20) // 8))
heap_sha = hashlib.sha256(heap).hexdigest()

counters = {"a": 0, "b": 0}


def count(name, delay):
    while True:
        counters[name] += 1
        time.sleep(delay)


for name, delay in (("a", 0.01), ("b", 0.02)):
    threading.Thread(target=count, args=(name, delay), daemon=True).start()

child = subprocess.Popen(["/usr/bin/sleep", "infinity"])
f = open("/workspace/state.txt", "w+")
f.write("line one\nline two\n")
f.flush()
f.seek(5)

outside = None
if os.environ.get("OUTSIDE_PORT"):
    outside = socket.create_connection(("127.0.0.1", int(os.environ["OUTSIDE_PORT"])))
    outside.sendall(b"hello from inside\n")


def outside_state():
    if outside is None:
        return None
    outside.setblocking(False)
    try:
        data = outside.recv(100)
        return "closed" if data == b"" else "open"
    except BlockingIOError:
        return "open"
    except OSError as exc:
        return f"closed ({exc.__class__.__name__})"


def report():
    pos = f.tell()
    f.seek(0)
    content = f.read()
    f.seek(pos)
    try:
        os.kill(child.pid, 0)
        child_alive = child.poll() is None
    except ProcessLookupError:
        child_alive = False
    return {
        "pid": os.getpid(),
        "counters": dict(counters),
        "threads": threading.active_count(),
        "heap_sha": heap_sha,
        "heap_sha_now": hashlib.sha256(heap).hexdigest(),
        "heap_len": len(heap),
        "file_content": content,
        "file_offset": pos,
        "child_pid": child.pid,
        "child_alive": child_alive,
        "outside": outside_state(),
        "uid": os.getuid(),
    }


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", PORT))
srv.listen()
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        if conn.recv(100).strip() == b"report":
            conn.sendall(json.dumps(report()).encode())
