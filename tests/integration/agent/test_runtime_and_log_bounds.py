"""A hostile run cannot make the agent hold unbounded threads, memory or disk, and other runs go on.

Real containers (runc) running real task code, the agent's real runtime
server, RunSlot, log pumps and outbox. The agent here is this test process:
its threads and RSS are sampled with psutil while the task attacks.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from helpers import ResourceWatch, assert_eventually
from torpor._proto.v1 import agent_pb2 as ap
from torpor.agent._bounds import AgentBounds
from torpor.agent._logs import LogBudget, LogRelay
from torpor.agent._outbox import Outbox
from torpor.agent._runs import RunSlot
from torpor.agent._runtime_server import RuntimeServer

PROJECT = Path(__file__).resolve().parents[2] / "e2e" / "project"
PYTHON = "/usr/bin/python3"
MiB = 1 << 20

CALM = r"""
import json
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.sdk._runtime import call
for i in range(20):
    call(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json=json.dumps({"i": i}))))
call(rt.RuntimeRequest(result=rt.RuntimeResult(ok=True, output_json='"calm"')))
print("calm done", flush=True)
"""

GIGABYTE = r"""
import sys
chunk = (b"y" * 1023 + b"\n") * 1024  # 1 MiB of whole lines
for _ in range(1024):
    sys.stdout.buffer.write(chunk)
sys.stdout.buffer.flush()
"""


def _app(state_dir: Path) -> Path:
    app = state_dir / "bounds-app"
    app.mkdir()
    shutil.copy(PROJECT / "socket_flood.py", app / "socket_flood.py")
    (app / "calm.py").write_text(CALM)
    (app / "gigabyte.py").write_text(GIGABYTE)
    app.chmod(0o755)
    return app


def _slot(run_id: str, sent: list[ap.AgentMessage], bounds: AgentBounds, gate: threading.Semaphore):  # type: ignore[no-untyped-def]
    slot = RunSlot(spec=ap.RunSpec(run=ap.RunRef(run_id=run_id, generation=1), attempt=1), send=sent.append,
                   suspend_threshold=5.0, request_checkpoint=lambda *_: None, bounds=bounds)
    slot.reported.set()  # as the agent does once RunStarted is sent

    def before_launch(socket_dir: Path) -> None:
        slot.server = RuntimeServer(socket_dir, slot.handle, name=run_id, bounds=bounds, gate=gate)
        slot.server.start()

    return slot, before_launch


def test_a_flood_of_huge_frames_and_stalled_connections_leaves_the_agent_and_other_runs_unharmed(
        make_agent, file_store, state_dir):
    agent = make_agent(file_store)
    app = _app(state_dir)
    bounds = AgentBounds(connections_per_run=4, connections_total=8, read_timeout=2.0)
    gate = threading.BoundedSemaphore(bounds.connections_total)
    flood_sent: list[ap.AgentMessage] = []
    calm_sent: list[ap.AgentMessage] = []
    flood, flood_launch = _slot("run-flood", flood_sent, bounds, gate)
    calm, calm_launch = _slot("run-calm", calm_sent, bounds, gate)
    watch = ResourceWatch(probe=lambda: sum(1 for t in threading.enumerate() if t.name == "runtime-conn-run-flood"))
    try:
        fc = agent.start(run_id="run-flood", args=[PYTHON, "/app/socket_flood.py", "/app/stop"], app_dir=app,
                         before_launch=flood_launch)
        flood_log = agent.mgr.run_log("run-flood", "stdout")
        assert_eventually(lambda: '"round": 1' in flood_log.read_text(), timeout=120, msg="the flood never began")
        # The flood goes on until told to stop, so the calm run's requests all meet it.
        cc = agent.start(run_id="run-calm", args=[PYTHON, "/app/calm.py"], app_dir=app, before_launch=calm_launch)
        assert cc.wait(timeout=120) == 0, agent.mgr.run_log("run-calm", "stderr").read_text()
        (app / "stop").touch()
        assert fc.wait(timeout=120) == 0, agent.mgr.run_log("run-flood", "stderr").read_text()
    finally:
        watch.stop()
        for slot in (flood, calm):
            if slot.server is not None:
                slot.server.close()
    # The calm run was served in full, in order.
    assert "calm done" in agent.mgr.run_log("run-calm", "stdout").read_text()
    assert [json.loads(m.metadata.metadata_json)["i"] for m in calm_sent] == list(range(20))
    assert calm.result is not None and calm.result.output_json == '"calm"'
    # Every huge frame was refused with the limit named, unread; stalled connections were dropped.
    rounds = [json.loads(line) for line in flood_log.read_text().splitlines()]
    assert rounds and all(r["refused"] == r["frames"] == 64 for r in rounds), rounds
    assert sum(r["stalled_dropped"] for r in rounds) > 0, rounds
    assert flood_sent == [] and flood.result is None  # nothing of the flood reached the handler
    # The agent held at most the flood run's permits in threads, and no frame's worth of memory.
    assert watch.max_probe <= bounds.connections_per_run
    assert watch.max_threads <= watch.threads_before + 2 * bounds.connections_per_run + 12, \
        (watch.threads_before, watch.max_threads)
    assert watch.rss_growth < 64 * MiB, (watch.rss_before, watch.max_rss)


def test_a_task_printing_a_gigabyte_keeps_its_budget_and_the_outbox_its_bound(make_agent, file_store, state_dir):
    agent = make_agent(file_store)
    app = _app(state_dir)
    outbox = Outbox(log_bytes=2 * MiB)
    ref = ap.RunRef(run_id="run-loud", generation=1)
    relay = LogRelay(outbox.send_log, ref, attempt=1)
    agent.mgr.log_sink = lambda run_id, stream, data, dropped: relay.relay(stream, data, dropped)
    budget = LogBudget(limit=4 * MiB)
    watch = ResourceWatch()
    try:
        c = agent.start(run_id="run-loud", args=[PYTHON, "/app/gigabyte.py"], app_dir=app, log_budget=budget)
        code = c.wait(timeout=300)
    finally:
        watch.stop()
    assert code == 0, agent.mgr.run_log("run-loud", "stderr").read_text()
    relay.flush()
    outbox.send(ap.AgentMessage(run_exited=ap.RunExited(run=ref, exit_code=0)))  # the final report always goes
    printed = 1 << 30
    # The agent's disk copy: the budget's whole lines, the notice, and the marker with the exact count.
    text = agent.mgr.run_log("run-loud", "stdout").read_bytes()
    *kept, notice, marker = text.split(b"\n")[:-1]
    # Whole lines, but for the one the budget ran out in when a pipe read ended inside it.
    full = [line for line in kept if line == b"y" * 1023]
    assert len(full) >= len(kept) - 1 and all(set(line) == {ord("y")} for line in kept)
    output = 1024 * len(full) + sum(len(line) for line in kept if len(line) < 1023)
    assert 4 * MiB - 1024 <= output <= 4 * MiB
    assert b"log budget of 4,194,304 bytes" in notice and b"torpor coordinator --log-budget" in notice
    assert marker == f"[torpor] {printed - output:,} bytes of output dropped: over this attempt's log budget of " \
                     f"4,194,304 bytes (torpor coordinator --log-budget)".encode()
    # The outbox: at most its bound of logs (and the small marker lines), then the exit report.
    held = outbox.unacked()
    assert held[-1].WhichOneof("msg") == "run_exited"
    logs = [m.log for m in held[:-1]]
    sent = sum(len(m.data) for m in logs if not m.dropped_bytes)
    markers = [m for m in logs if m.dropped_bytes]
    # A marker for each stretch the outbox was full and one for the budget: how many stretches there are
    # depends on how the pipe reads fell, so their count is not fixed; each is one short line.
    assert sent <= 2 * MiB and markers and all(len(m.data) < 512 for m in markers), markers
    # Nothing unaccounted for: what went out plus what the markers stand for is all that was printed, with the
    # notice line (and the line break put before it when the budget ran out inside a line).
    assert sent + sum(m.dropped_bytes for m in markers) == len(text) - len(marker) - 1 + printed - output
    assert [m.seq for m in held] == list(range(1, len(held) + 1))
    assert watch.rss_growth < 64 * MiB, (watch.rss_before, watch.max_rss)
