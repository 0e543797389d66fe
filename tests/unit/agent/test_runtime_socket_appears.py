"""The runtime socket appears under its name only once a task may connect to it and it listens.

A task that finds no socket retries (the agent takes it away around a
leave-running dump); a task that finds one it may not open (EACCES) or that
refuses it would fail. The interleaving is forced: the test looks at the
socket's name at the very moments the server sets the mode and renames.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent import _runtime_server
from torpor.agent._bounds import AgentBounds
from torpor.agent._runtime_server import RuntimeServer


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def test_the_socket_is_named_only_once_open_to_the_task_and_listening(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "runtime.sock"
    seen: list[tuple] = []
    real_chmod, real_replace = os.chmod, os.replace

    def chmod(path, mode, *a, **kw):  # type: ignore[no-untyped-def]
        seen.append(("chmod", final.exists()))
        return real_chmod(path, mode, *a, **kw)

    def replace(src, dst, *a, **kw):  # type: ignore[no-untyped-def]
        seen.append(("replace", final.exists(), os.stat(src).st_mode & 0o777, _accepts(str(src))))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(_runtime_server.os, "chmod", chmod)
    monkeypatch.setattr(_runtime_server.os, "replace", replace)
    server = RuntimeServer(tmp_path, lambda req: rt.RuntimeResponse(ok=rt.Empty()), name="t", bounds=AgentBounds())
    try:
        for _ in range(2):  # the first start, and the start again after a pause (around a dump)
            seen.clear()
            server.start()
            assert seen[0] == ("chmod", False), seen  # the mode is set before the name exists
            assert seen[1] == ("replace", False, 0o777, True), seen  # open to all and listening, then named
            assert final.exists() and (final.stat().st_mode & 0o777) == 0o777 and _accepts(str(final))
            assert not (tmp_path / _runtime_server.STAGING_NAME).exists()
            assert server.pause(timeout=5)
            assert not final.exists()
    finally:
        server.close()
