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
