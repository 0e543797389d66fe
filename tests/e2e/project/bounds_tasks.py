"""Greedy and hostile tasks for tests/e2e/test_bounds.py: each one must be refused or contained."""

import sys

from e2e_tasks import child
from socket_flood import flood

from torpor import LimitExceeded, Retry, metadata, task


def _limit(exc: LimitExceeded) -> dict:
    return {"what": exc.what, "limit": exc.limit, "actual": exc.actual, "setting": exc.setting, "message": str(exc)}


@task(id="flood-socket")
def flood_socket(payload):
    """Floods the runtime socket until canceled, one JSON line per round in its logs."""
    flood(threads=payload.get("threads", 16), frames=payload.get("frames", 4), conns=payload.get("conns", 200),
          hold=payload.get("hold", 3.0))


@task(id="calm")
def calm(payload):
    for i in range(payload.get("n", 10)):
        metadata.set("i", i)
    return "calm"


@task(id="print-gigabyte")
def print_gigabyte(payload):
    chunk = (b"z" * 1023 + b"\n") * 1024  # 1 MiB of whole lines, written in big pieces: seconds, not minutes
    for _ in range(payload.get("mib", 1024)):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return {"printed_mib": payload.get("mib", 1024)}


@task(id="over-limits")
def over_limits(payload):
    out = {}
    metadata.set("small", "kept")
    try:
        metadata.set("big", "x" * (100 << 10))
    except LimitExceeded as exc:
        out["metadata"] = _limit(exc)
    out["metadata_after"] = metadata.all()
    try:  # each payload under the coordinator's 3 MiB, together over the agent's trigger limit
        child.batch_trigger([{"n": 0, "pad": "p" * (2900 << 10)}] * 3)
    except LimitExceeded as exc:
        out["trigger"] = _limit(exc)
    ids = []
    try:
        for n in range(payload["children"] + 1):
            ids.append(child.trigger({"n": n}))
    except LimitExceeded as exc:
        out["children"] = _limit(exc)
    out["triggered"] = len(ids)
    return out


@task(id="big-result", retry=Retry(max_attempts=1))
def big_result(payload):
    return "r" * (payload.get("mib", 5) << 20)
