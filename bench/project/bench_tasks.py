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
