"""Tasks the end-to-end tests drive through a real `torpor dev` stack."""

import dataclasses
import hashlib
import os
import random
import time

from torpor import Retry, checkpoint, context, logger, metadata, task, wait


@task(id="big-state")
def big_state(payload):
    mb = payload.get("mb", 100)
    rnd = random.Random(payload.get("seed", 1))
    blob = bytearray()
    while len(blob) < mb << 20:
        blob += rnd.randbytes(min(32 << 20, (mb << 20) - len(blob)))
    before = hashlib.sha256(blob).hexdigest()
    metadata.set("phase", "waiting")
    wait.for_(seconds=payload.get("seconds", 30))
    return {"before": before, "after": hashlib.sha256(blob).hexdigest(), "attempt": context().attempt}


@task(id="secret-wait")
def secret_wait(payload):
    """Holds secrets derived from payload["marker"] (1 MiB of bytes and a sentence) across a long wait."""
    marker = payload["marker"]
    secret = hashlib.shake_256(marker.encode()).digest(1 << 20)
    phrase = f"the database password is {marker}"
    before = hashlib.sha256(secret + phrase.encode()).hexdigest()
    wait.for_(seconds=payload.get("seconds", 30))
    return {"before": before, "after": hashlib.sha256(secret + phrase.encode()).hexdigest(),
            "attempt": context().attempt}


@task(id="busy")
def busy(payload):
    """Holds its slot (no wait) for a while."""
    time.sleep(payload.get("seconds", 10))
    return "done"


@task(id="token-wait")
def token_wait(payload):
    token = wait.create_token(timeout=payload.get("timeout"))
    metadata.set("token", token.id)
    try:
        return {"data": wait.for_token(token)}
    except wait.WaitTimeout:
        return {"timed_out": True}


@task(id="child")
def child(payload):
    if payload.get("fail"):
        raise ValueError(f"child {payload['n']} fails on purpose")
    time.sleep(payload.get("sleep", 0))
    return payload["n"] * 10


@task(id="parent")
def parent(payload):
    one = child.trigger_and_wait({"n": 1})
    many = child.batch_trigger_and_wait([{"n": 2}, {"n": 3, "fail": True}, {"n": 4}])
    return {
        "one": one.output,
        "many": [r.output if r.ok else f"error: {r.error}" for r in many],
    }


@task(id="flaky", retry=Retry(max_attempts=3, factor=2, min_timeout=0.2, max_timeout=1, randomize=False))
def flaky(payload):
    if context().attempt < 3:
        raise RuntimeError(f"attempt {context().attempt} fails on purpose")
    return {"attempt": context().attempt}


@task(id="short-wait")
def short_wait(payload):
    print("short-wait says hello", flush=True)
    logger.info("and logs through torpor.logger")
    t0 = time.monotonic()
    wait.for_(seconds=payload.get("seconds", 1))
    return {"slept": time.monotonic() - t0, "pid": os.getpid()}


@task(id="save-points", checkpoint_every=None)
def save_points(payload):
    counter = 0
    for _ in range(3):
        counter += 1
        checkpoint()
    return {"counter": counter}


@task(id="steady", checkpoint_every=1.0)
def steady(payload):
    """Counts for a while, checkpointed every second: crash recovery restores it mid-way."""
    started = time.time()
    count = 0
    for _ in range(payload.get("steps", 60)):
        count += 1
        time.sleep(0.25)
    return {"started": started, "count": count, "attempt": context().attempt}


@task(id="bad-return", retry=Retry(max_attempts=1))
def bad_return(payload):
    return {1, 2, 3}  # a set is not JSON


@task(id="save-loop")
def save_loop(payload):
    """torpor.checkpoint() in a loop: a crash restores it from an image taken inside checkpoint()."""
    started = time.time()
    count = 0
    for _ in range(payload.get("steps", 40)):
        count += 1
        time.sleep(0.25)
        checkpoint()
    return {"started": started, "count": count, "attempt": context().attempt}


@task(id="short-waits", checkpoint_every=1.0)
def short_waits(payload):
    """Lives in short in-place waits, so its periodic checkpoints catch it inside one."""
    started = time.time()
    count = 0
    for _ in range(payload.get("steps", 12)):
        count += 1
        wait.for_(seconds=1)
    return {"started": started, "count": count, "attempt": context().attempt}


def _probe(target):
    import socket

    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


@task(id="net-probe")
def net_probe(payload):
    """Tries to connect to each "host:port" of payload["targets"]; says what happened to each."""
    return {t: _probe(t) for t in payload["targets"]}


@task(id="host-net", network="host")
def host_net(payload):
    """Asks for the host's network (agents refuse it unless started with --allow-host-network)."""
    return "ran"


def _syscall(number, *args):
    """The errno name a raw system call got, or "ALLOWED" (the child of a clone that got through exits)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if rc == 0 and number in (56, 435):
        os._exit(0)
    if rc > 0 and number in (56, 435):
        os.waitpid(rc, 0)
    return "ALLOWED" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def _fork_until_refused(limit=4096):
    """Forks sleeping children until the kernel says no; returns how many and what it said."""
    import signal

    children, said = [], "never refused"
    try:
        while len(children) < limit:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        said = type(exc).__name__
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"children": len(children), "refused_with": said}


@task(id="hostile")
def hostile(payload):
    """What a hostile task tries: namespaces, mounts, tracing, keys, BPF, perf, other runs' sockets, a fork bomb."""
    import ctypes
    import signal
    import socket

    buf = ctypes.create_string_buffer(256)
    at = ctypes.addressof(buf)
    clone_args = (ctypes.c_uint64 * 11)()
    clone_args[0], clone_args[4] = 0x10000000, signal.SIGCHLD  # CLONE_NEWUSER
    refused = {
        "unshare(CLONE_NEWUSER)": _syscall(272, 0x10000000),
        "clone(CLONE_NEWUSER)": _syscall(56, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0),
        "clone3(CLONE_NEWUSER)": _syscall(435, ctypes.addressof(clone_args), ctypes.sizeof(clone_args)),
        "mount": _syscall(165, at, at, at, 0, 0),
        "ptrace(another run)": _syscall(101, 16, payload.get("other_pid", 1), 0, 0),
        "keyctl": _syscall(250, 0, -3, 0),
        "bpf": _syscall(321, 0, at, 64),
        "perf_event_open": _syscall(298, at, 0, -1, -1, 0),
    }
    sockets = {}
    for path in payload.get("sockets", []):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            sockets[path] = "connected"
        except OSError as exc:
            sockets[path] = type(exc).__name__
    return {"refused": refused, "sockets": sockets, "fork": _fork_until_refused()}


@task(id="big-mem", memory="3GiB")
def big_mem(payload):
    """Promised 3 GiB (placement only needs the promise): holds its slot a while."""
    time.sleep(payload.get("seconds", 5))
    return "placed"


@task(id="mem-hog", memory="64MiB")
def mem_hog(payload):
    """Touches more memory than its limit: the kernel kills it."""
    blob = bytearray(payload.get("mb", 256) << 20)
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    return "survived"


@task(id="async-trio")
async def async_trio(payload):
    """Three coroutines: one waits on a token (the run suspends), two count; all go on after the restore."""
    import asyncio

    from torpor import wait as w

    ticks = {"a": [], "b": []}
    answered = {}

    async def count(name):
        while "child" not in answered:
            ticks[name].append(time.time())
            await asyncio.sleep(0.1)

    async def ask():
        token = await w.create_token_async(timeout=600)
        metadata.set("token", token.id)
        answered["data"] = await w.for_token_async(token)
        answered["at"] = time.time()
        result = await child.trigger_and_wait_async({"n": 2})
        await asyncio.sleep(0.5)
        answered["child"] = result.output

    await asyncio.gather(count("a"), count("b"), ask())
    at = answered["at"]
    return {"data": answered["data"], "child": answered["child"],
            "before": {k: sum(1 for t in v if t < at) for k, v in ticks.items()},
            "after": {k: sum(1 for t in v if t >= at) for k, v in ticks.items()}}


@task(id="async-pair")
async def async_pair(payload):
    """Two short waits at once, in place: each returns (one wake-up signal must reach both waiters)."""
    import asyncio

    from torpor import wait as w

    start = time.time()

    async def nap(seconds):
        await w.for_async(seconds=seconds)
        return round(time.time() - start, 2)

    return await asyncio.gather(nap(payload.get("a", 1.0)), nap(payload.get("b", 1.5)))


@dataclasses.dataclass
class Item:
    name: str
    count: int = 1


@dataclasses.dataclass
class Basket:
    owner: str
    items: list[Item]


@task(id="typed-order", retry=Retry(max_attempts=3, min_timeout=0.1, max_timeout=0.2))
def typed_order(basket: Basket):
    """Gets a Basket (a dataclass), built from the payload; a bad payload never reaches it."""
    assert isinstance(basket, Basket) and all(isinstance(x, Item) for x in basket.items), repr(basket)
    return {"type": type(basket).__name__, "owner": basket.owner, "units": sum(x.count for x in basket.items)}


@task(id="typed-parent")
def typed_parent(payload):
    """Triggers typed-order from inside a run with the payload it is given; says what happened."""
    try:
        result = typed_order.trigger_and_wait(payload["order"])
        return {"ok": result.ok, "output": result.output}
    except Exception as exc:  # noqa: BLE001 - the test reads the error
        return {"error": f"{type(exc).__name__}: {exc}"}


@task(id="env-probe")
def env_probe(payload):
    """What of the project's environment the run got: plain values as they are, a secret only as its sha256."""
    secret = os.environ.get(payload.get("secret", ""))
    print("env-probe ran", flush=True)
    return {"plain": os.environ.get(payload.get("plain", "")),
            "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret is not None else None}


@task(id="restless")
def restless(payload):
    """A second thread asks for a long wait the moment the process is running again after a restore: before
    the agent has reported the restore, if the agent is held there (tests/e2e/test_races.py)."""
    import threading

    seconds = payload.get("seconds", 3)
    second: dict = {}

    def watch():
        last = time.time()
        while True:
            time.sleep(0.005)
            now = time.time()
            if now - last > 1.0:  # frozen for more than a second: dumped, and running again from the image
                break
            last = now
        wait.for_(seconds=payload.get("second", seconds))
        second["done"] = True

    t = threading.Thread(target=watch)
    t.start()
    wait.for_(seconds=seconds)
    t.join()
    return {"second_wait_done": second.get("done", False)}
