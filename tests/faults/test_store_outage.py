"""Scenario 6: MinIO killed (kill -9) while a snapshot is uploaded, and while one is downloaded; started again.

An outage of the store delays work but kills nothing: the dump or the
restore fails or waits, and the run completes once the store is back, with
no attempt or host failure spent, and nothing of it left in the store.
"""

from __future__ import annotations

import time

from harness_checker import Checker, Expect
from harness_stack import Stack, status_name
from helpers import assert_eventually


def test_store_killed_during_an_upload(stack: Stack, checker: Checker) -> None:
    assert stack.minio is not None
    run = stack.trigger("long-wait", steps=4, wait=3, wait_after=2, ballast_mb=48)
    assert stack.wait_status(run, "RUNNING", "SUSPENDING").agent == "a1"
    assert_eventually(lambda: stack.multipart_uploads(f"store/runs/{run}/"), timeout=30, interval=0.01,
                      msg="never caught the snapshot's upload under way")
    stack.minio.kill()
    try:
        time.sleep(2 * stack.lease)  # the outage itself: its length is the fault
    finally:
        stack.minio.start()
    checker.verify([Expect(run, "long-wait", 4)])


def test_store_killed_during_a_download(stack: Stack, checker: Checker) -> None:
    """The restore is sent; the store dies before a byte of the snapshot is read, and comes back two leases later."""
    assert stack.minio is not None
    a1 = stack.restart_agent("a1", faults="agent.before_restore=sleep:1")
    run = stack.trigger("long-wait", steps=4, wait=2.5, wait_after=2, ballast_mb=48)
    assert stack.wait_status(run, "RUNNING", "SUSPENDING").agent == "a1"
    a1.wait_log("fault point agent.before_restore", timeout=30)
    stack.minio.kill()
    restoring = stack.run(run)
    assert status_name(restoring) == "RESTORING", restoring
    try:
        time.sleep(2 * stack.lease)
    finally:
        stack.minio.start()
    checker.verify([Expect(run, "long-wait", 4)])
