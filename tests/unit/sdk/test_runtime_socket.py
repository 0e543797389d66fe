"""The SDK and the agent's runtime server over a real unix socket, waits included.

The wait path blocks on SIGUSR1, which must be blocked before any thread
starts, so it runs in a fresh interpreter, as the container entrypoint does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_wait_blocks_without_a_connection_and_wakes_on_the_signal(tmp_path):
    script = textwrap.dedent(f"""
        import os, threading, time
        from pathlib import Path
        from torpor.sdk import _runtime
        _runtime.block_wake_signal()                      # as the entrypoint does, before any thread
        from torpor._proto.v1 import runtime_pb2 as rt
        from torpor.agent._runtime_server import RuntimeServer
        from torpor.sdk._wait import _wait
        from torpor.sdk import _context
        import datetime as dt

        waits = {{}}
        open_conns = []
        def handler(req):
            kind = req.WhichOneof("msg")
            if kind == "wait":
                waits[req.wait.wait_id] = None
                def resolve():
                    time.sleep(0.3)
                    open_conns.append(server._active)       # no connection open while the task waits
                    waits[req.wait.wait_id] = "42"
                    os.kill(os.getpid(), _runtime.WAKE_SIGNAL)
                threading.Thread(target=resolve).start()
                return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))
            if kind == "wait_result":
                value = waits.get(req.wait_result.wait_id)
                return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(ready=value is not None, result_json=value or ""))
            return rt.RuntimeResponse(error="unexpected")

        server = RuntimeServer(Path("{tmp_path}"), handler)
        server.start()
        _runtime.set_socket_path("{tmp_path}/runtime.sock")
        _context._set(_context.RunContext(run_id="r", task_id="t", attempt=1, version="v",
                                          started_at=dt.datetime.now(dt.timezone.utc)))
        t0 = time.monotonic()
        outcome = _wait({{"until_unix": time.time() + 100}})
        print(outcome.result_json, round(time.monotonic() - t0, 1), open_conns)
        server.pause(timeout=1)
        assert not Path("{tmp_path}/runtime.sock").exists()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result, elapsed, conns = proc.stdout.split(maxsplit=2)
    assert result == "42" and float(elapsed) >= 0.3
    assert conns.strip() == "[0]"


def test_a_task_restored_mid_wait_sends_its_request_again(tmp_path):
    """The new agent does not know the wait: the SDK asks again, a checkpoint marked as after a restore."""
    script = textwrap.dedent(f"""
        import os, time, datetime as dt
        from pathlib import Path
        from torpor.sdk import _runtime
        _runtime.block_wake_signal()
        from torpor._proto.v1 import runtime_pb2 as rt
        from torpor.agent._runtime_server import RuntimeServer
        from torpor.sdk import _context
        from torpor.sdk._wait import _wait, checkpoint

        seen = []
        known = {{}}
        def handler(req):
            kind = req.WhichOneof("msg")
            seen.append(kind if kind != "checkpoint" else f"checkpoint after_restore={{req.checkpoint.after_restore}}")
            if kind == "wait":
                if req.wait.wait_id in known:        # the second time: this agent serves it
                    known[req.wait.wait_id] = "5"
                    return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=True))
                known[req.wait.wait_id] = None
                os.kill(os.getpid(), _runtime.WAKE_SIGNAL)  # the restore's wake-up
                return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))
            if kind == "checkpoint":
                if req.checkpoint.after_restore:
                    known[req.checkpoint.wait_id] = "true"
                    return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=True))
                os.kill(os.getpid(), _runtime.WAKE_SIGNAL)
                return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))
            if kind == "wait_result":
                value = known.get(req.wait_result.wait_id, "unknown")
                if value == "unknown" or value is None:      # as an agent that restored it and never saw it
                    return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(ready=False, unknown=True))
                return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(ready=True, result_json=value))
            return rt.RuntimeResponse(error="unexpected " + kind)

        server = RuntimeServer(Path("{tmp_path}"), handler)
        server.start()
        _runtime.set_socket_path("{tmp_path}/runtime.sock")
        _context._set(_context.RunContext(run_id="r", task_id="t", attempt=1, version="v",
                                          started_at=dt.datetime.now(dt.timezone.utc)))
        print(_wait({{"until_unix": time.time() + 1}}).result_json)
        checkpoint()
        print(seen)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result, seen = proc.stdout.split("\n", 1)
    assert result == "5"
    assert seen.strip() == str(["wait", "wait_result", "wait", "wait_result",
                                "checkpoint after_restore=False", "wait_result", "checkpoint after_restore=True",
                                "wait_result"])
