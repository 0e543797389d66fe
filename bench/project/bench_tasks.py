import os
import time

from torpor import task, wait


@task(id="hold-and-wait")
def hold_and_wait(payload):
    half = payload.get("mb", 50) << 19
    blob = bytearray(os.urandom(half)) + bytearray(b"torpor!!" * (half // 8))
    t_wait = time.time()
    wait.for_(seconds=payload.get("seconds", 4))
    t_back = time.time()
    return {"t_wait": t_wait, "t_back": t_back, "len": len(blob)}


@task(id="busy")
def busy(payload):
    time.sleep(payload.get("seconds", 10))


@task(id="park")
def park(payload):
    """Waits on a token it names in its metadata (bench/scale.py): suspended with its state, no compute."""
    from torpor import metadata

    state = bytearray(os.urandom(payload.get("kb", 256) << 10))
    token = wait.create_token()
    metadata.set("token", token.id)
    data = wait.for_token(token)
    return {"back": time.time(), "data": data, "len": len(state)}


@task(id="build-sleep-use")
def build_sleep_use(payload):
    """bench/versus_dbos.py's state workload: build state in steps (plain calls), wait durably, use the state."""
    import hashlib
    import random

    steps, kb = payload.get("steps", 200), payload.get("kb", 1024)
    state = []
    t0 = time.perf_counter()
    for i in range(steps):
        state.append(random.Random(i).randbytes(kb << 10))
    build_s = time.perf_counter() - t0
    t = time.perf_counter()
    for i in range(steps):
        (lambda x: x)(i)
    per_call_ms = (time.perf_counter() - t) / steps * 1000
    t_sleep = time.time()
    wait.for_(seconds=payload.get("sleep", 30))
    t_back = time.time()
    return {"t_sleep": t_sleep, "t_back": t_back, "build_s": build_s, "per_call_ms": per_call_ms,
            "sha256": hashlib.sha256(b"".join(state)).hexdigest()}
