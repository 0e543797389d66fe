"""The fault harness's workload: tasks that record every step they take.

Each step is sent, before the task goes on, to the ledger listener of the
host the task runs on (127.0.0.1:LEDGER inside the agent's network
namespace, hence network="host" and the agents' --allow-host-network), and kept in the task's memory, which is returned as the run's
output. The ledger sees every copy that ever ran; the output is the history
of the copy that finished, as it inherited it through its checkpoints.

A step names its copy: the directory bound at /run/torpor, which the agent
makes fresh for every container it starts or restores. The task cannot see
the run's generation (``torpor.context()`` does not carry it), so the copy
is how two executions are told apart; the harness maps copies to
generations from the run's events.

Payload: ``ledger`` (port), ``steps``, ``pause`` (seconds per step),
``ballast_mb`` (incompressible memory, to make dumps and uploads take time),
``short`` (seconds of each in-place wait), ``wait`` (seconds of the long
wait) and ``wait_after`` (the step it follows).
"""

import hashlib
import json
import os
import socket
import time

from torpor import checkpoint, context, task, wait


def copy_id() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/run/torpor":
                return fields[3].rstrip("/").rsplit("/", 1)[-1]
    return "unknown"


class Steps:
    def __init__(self, payload):
        self.port = payload["ledger"]
        self.run = context().run_id
        self.done = []
        self.ckpt = 0
        mb = payload.get("ballast_mb", 0)
        self.ballast = os.urandom(mb << 20) if mb else b""
        self.sha = hashlib.sha256(self.ballast).hexdigest()

    def step(self, i):
        self._send(i)
        self.done.append([i, copy_id(), os.getpid(), round(time.time(), 3)])

    def _send(self, i):
        for _ in range(6000):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    # The copy is read right before sending: a copy restored from an image taken earlier names itself.
                    line = {"run": self.run, "step": i, "copy": copy_id(), "pid": os.getpid(), "time": time.time(),
                            "ckpt": self.ckpt}
                    s.sendall(json.dumps(line).encode() + b"\n")
                    if s.recv(16).startswith(b"ok"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the ledger at 127.0.0.1:{self.port} did not take step {i}")

    def checkpoint(self, i):
        self.ckpt = i  # in the image: a copy restored from it says which checkpoint it came from
        checkpoint()

    def result(self):
        return {"run": self.run, "attempt": context().attempt, "steps": self.done,
                "ballast_intact": hashlib.sha256(self.ballast).hexdigest() == self.sha}


@task(id="ckpt-loop", network="host")
def ckpt_loop(payload):
    """torpor.checkpoint() after every step."""
    s = Steps(payload)
    for i in range(1, payload["steps"] + 1):
        s.step(i)
        time.sleep(payload.get("pause", 0.2))
        s.checkpoint(i)
    return s.result()


@task(id="short-waits", checkpoint_every=1.0, network="host")
def short_waits(payload):
    """Short in-place waits (under the agent's suspend threshold); periodic checkpoints catch it inside them."""
    s = Steps(payload)
    for i in range(1, payload["steps"] + 1):
        s.step(i)
        wait.for_(seconds=payload.get("short", 0.5))
    return s.result()


@task(id="long-wait", network="host")
def long_wait(payload):
    """Steps, one long wait (the run suspends to a snapshot), more steps."""
    s = Steps(payload)
    after = payload.get("wait_after", 2)
    for i in range(1, payload["steps"] + 1):
        s.step(i)
        time.sleep(payload.get("pause", 0.1))
        if i == after:
            wait.for_(seconds=payload.get("wait", 5))
    return s.result()


@task(id="counter", checkpoint_every=1.0, network="host")
def counter(payload):
    """Counts, with a periodic checkpoint every second."""
    s = Steps(payload)
    for i in range(1, payload["steps"] + 1):
        s.step(i)
        time.sleep(payload.get("pause", 0.2))
    return s.result()
