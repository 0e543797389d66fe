"""Prints an ever-growing counter: the simplest proof that a process went on."""

import time

i = 0
while True:
    i += 1
    print(f"count {i}", flush=True)
    time.sleep(0.05)
