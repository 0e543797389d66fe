"""The step ledger: every step a task executes, recorded outside the task, in the order it happened.

Tasks share their agent's network namespace (containers have no namespace of
their own yet), so each host runs one listener on 127.0.0.1:PORT inside its
namespace. A task's step connects, sends one JSON line, waits for "ok" and
closes (no connection stays open across a dump; one caught mid-step by a
dump comes back closed, the task sends the step again). The listener stamps
the line with its own clock and its host's name and appends it to that host's
file: one writer per file. The files of all hosts are merged by that stamp;
since a step goes on only after its line is written, the merged order is the
order in which the steps really ran, whichever copy ran them.

A partition cuts a namespace off the bridge but not its loopback, so a copy
left running on a cut-off host still writes here, which is how two live
copies are caught.

Run as a script (inside a namespace): ``python harness_ledger.py PORT FILE HOST``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    t: float
    """When the listener received it (seconds, this machine's clock)."""
    host: str
    """The host (namespace) the copy ran on."""
    run: str
    step: int
    copy: str
    """The container the copy ran in (its runtime socket directory): new for every start and restore."""
    pid: int
    """The task's pid inside its container (the same after a restore: CRIU keeps pids)."""
    task_time: float
    """The task's own time.time() when it made the step."""
    ckpt: int
    """Steps the task had finished when it last asked for a checkpoint() (0 if never)."""


def read(paths: list[Path]) -> list[Step]:
    steps = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            steps.append(Step(t=d["t"], host=d["host"], run=d["run"], step=d["step"], copy=d["copy"], pid=d["pid"],
                              task_time=d["time"], ckpt=d.get("ckpt", 0)))
    steps.sort(key=lambda s: s.t)
    return steps


def by_run(steps: list[Step]) -> dict[str, list[Step]]:
    out: dict[str, list[Step]] = {}
    for s in steps:
        out.setdefault(s.run, []).append(s)
    return out


# -- the listener -------------------------------------------------------------------


def serve(port: int, path: Path, host: str) -> None:
    lock = threading.Lock()
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of this process
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    print(f"ledger listening on 127.0.0.1:{port}", flush=True)

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                record = json.loads(data)
                with lock:
                    record["t"] = time.time()
                    record["host"] = host
                    out.write(json.dumps(record) + "\n")
                conn.sendall(b"ok\n")
            except (OSError, ValueError):
                return

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
