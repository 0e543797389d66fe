"""Holds secrets in memory and prints a digest of them every 50 ms, with a growing count.

MARKER (from the test) seeds 1 MiB of bytes the test can compute too, and a
sentence kept in a variable. A restore that brings the memory back goes on
printing the same digest with a higher count.
"""

import hashlib
import os
import time

marker = os.environ["MARKER"]
secret = hashlib.shake_256(marker.encode()).digest(1 << 20)
phrase = f"the database password is {marker}"
digest = hashlib.sha256(secret + phrase.encode()).hexdigest()
i = 0
while True:
    i += 1
    print(f"secret {digest} {i}", flush=True)
    time.sleep(0.05)
