"""A task that grabs resources until refused, then shows it goes on.

HOG=bomb: a fork bomb (every process forks until the kernel refuses, then
holds its pid); the first process prints {"forked": N, "errno": ...} and then
"beat N" lines for ever. HOG=fill: fills each writable tmpfs (FILL, a
comma-separated list of directories) until a write fails, prints what it
wrote and the error per directory, frees it and writes a small file there
again.
"""

import errno
import json
import os
import signal
import time


def bomb_child():
    while True:
        try:
            os.fork()  # parent and child both go round again
        except OSError:
            break
    while True:
        signal.pause()


def bomb():
    forked, refused = 0, None
    while refused is None:
        try:
            pid = os.fork()
        except OSError as exc:
            refused = exc.errno
            break
        if pid == 0:
            bomb_child()
        forked += 1
    print(json.dumps({"forked": forked, "errno": errno.errorcode[refused]}), flush=True)
    beat = 0
    while True:
        beat += 1
        print(f"beat {beat}", flush=True)
        time.sleep(0.05)


def fill_one(directory):
    chunk = b"\xa5" * (1 << 20)
    path = os.path.join(directory, "fill")
    written, failed = 0, None
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk)
        except OSError as exc:
            failed = errno.errorcode[exc.errno]
    os.unlink(path)
    with open(os.path.join(directory, "after"), "w") as f:
        f.write("still writable\n")
    return {"written": written, "errno": failed, "after": open(os.path.join(directory, "after")).read()}


def fill():
    print(json.dumps({d: fill_one(d) for d in os.environ["FILL"].split(",")}), flush=True)


{"bomb": bomb, "fill": fill}[os.environ["HOG"]]()
