"""Example tasks: what torpor does that a plain worker queue cannot.

Deploy with `torpor deploy examples`, then trigger any of them, e.g.
`torpor trigger long-wait --payload '{"seconds": 30}' --wait`.
"""

from __future__ import annotations

import hashlib
import random

from torpor import Retry, context, logger, metadata, task, wait


@task(id="long-wait")
def long_wait(payload: dict) -> dict:
    """Builds some state, then waits: a wait longer than a few seconds frees the host entirely."""
    seconds = float((payload or {}).get("seconds", 30))
    notes = [f"note {i}" for i in range(1000)]
    logger.info("waiting %s s; this run now turns into a snapshot", seconds)
    wait.for_(seconds=seconds)
    logger.info("back, with %d notes still in memory", len(notes))
    return {"waited": seconds, "notes": len(notes), "run": context().run_id}


@task(id="approval")
def approval(payload: dict) -> dict:
    """Asks a human: the run sleeps as a snapshot until `torpor tokens complete TOKEN`."""
    token = wait.create_token(timeout=float((payload or {}).get("timeout", 3600)))
    metadata.set("token", token.id)
    logger.info("approve with: torpor tokens complete %s --data '{\"approved\": true}'", token.id)
    try:
        answer = wait.for_token(token)
    except wait.WaitTimeout:
        return {"approved": False, "reason": "nobody answered in time"}
    return {"approved": bool(answer and answer.get("approved")), "answer": answer}


@task(id="square")
def square(payload: dict) -> int:
    x = payload["x"]
    if x < 0:
        raise ValueError(f"no squares of negative numbers today ({x})")
    return x * x


@task(id="fan-out")
def fan_out(payload: dict) -> dict:
    """Starts one child per number and sleeps (holding nothing) until all are done."""
    numbers = (payload or {}).get("numbers", [1, 2, 3])
    results = square.batch_trigger_and_wait([{"x": n} for n in numbers])
    return {
        "sum": sum(r.output for r in results if r.ok),
        "failed": [r.error for r in results if not r.ok],
    }


@task(id="flaky", retry=Retry(max_attempts=3, min_timeout=0.5, max_timeout=2, randomize=False))
def flaky(payload: dict) -> dict:
    """Fails on its first two attempts; the third one succeeds."""
    attempt = context().attempt
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return {"succeeded_on_attempt": attempt}


@task(id="big-state")
def big_state(payload: dict) -> dict:
    """Holds a large in-memory structure across a wait (and a move to another host)."""
    mb = int((payload or {}).get("mb", 100))
    rnd = random.Random(int((payload or {}).get("seed", 1)))
    blob = bytearray()
    while len(blob) < mb << 20:
        blob += rnd.randbytes(min(64 << 20, (mb << 20) - len(blob)))
    before = hashlib.sha256(blob).hexdigest()
    wait.for_(seconds=float((payload or {}).get("seconds", 30)))
    after = hashlib.sha256(blob).hexdigest()
    return {"mb": mb, "sha256_before": before, "sha256_after": after, "same": before == after}


@task(id="async-fetch")
async def async_fetch(payload: dict) -> dict:
    """An async def task: a heartbeat coroutine keeps ticking while another sleeps 8 s as a snapshot.

    The suspension freezes the event loop with both coroutines on it; after the
    restore (on any host) both go on where they were.
    """
    import asyncio
    import time

    ticks: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            ticks.append(time.time())
            await asyncio.sleep(0.2)

    async def slow_call() -> float:
        await wait.for_async(seconds=float((payload or {}).get("seconds", 8)))  # suspends the whole run
        resumed_at = time.time()
        await asyncio.sleep(1.0)  # the heartbeat goes on, after the restore, beside this one
        done.set()
        return resumed_at

    _, resumed_at = await asyncio.gather(heartbeat(), slow_call())
    return {"ticks_before": sum(t < resumed_at for t in ticks), "ticks_after": sum(t >= resumed_at for t in ticks)}


@task(id="numpy-stats")
def numpy_stats(payload: dict) -> dict:
    """Uses a third-party package (numpy, from torpor.toml's dependencies) across a suspension."""
    import numpy as np

    mb = int((payload or {}).get("mb", 100))
    data = np.random.default_rng(1).standard_normal((mb << 20) // 8)
    before = hashlib.sha256(data.tobytes()).hexdigest()
    wait.for_(seconds=float((payload or {}).get("seconds", 8)))  # the array, and numpy itself, sleep in the snapshot
    return {"numpy": np.__version__, "mean": round(float(data.mean()), 4), "std": round(float(data.std()), 4),
            "unchanged": hashlib.sha256(data.tobytes()).hexdigest() == before}
