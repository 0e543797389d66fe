"""The checker: what must hold for every run of a scenario, read from the ledger, the run and the database.

For each run:
1. it reaches COMPLETED, its output lists steps 1..N once each in order,
   and its memory (the ballast) came through intact;
2. one copy at a time: in the merged ledger, once a copy's step is followed
   by another copy's, the first copy never appears again (a copy is one
   container: one start or restore; its generation is read from the run's
   events);
3. nothing lost, nothing redone beyond the last checkpoint: inside a copy
   the steps go up by one; a new copy starts at most one past where the
   last one stopped; one restored from a ``checkpoint()`` image starts right
   after the checkpoint it names (which is at least the last one its
   predecessor saw return); one restored from a periodic image redoes only
   steps its predecessor made within ``checkpoint_every`` + the longest
   dump + slack before it stopped (plus one lease when its host was lost:
   a hung or cut-off host takes no checkpoint but its copy runs until its
   lease is over); a copy that starts over at step 1 is allowed only after a
   lost host;
4. the output is the history of the copies that ran: each step of the output
   is in the ledger under the copy that the output names;
5. no attempt is spent (attempt 1, one attempt row), and no host failure
   (``runs.host_failures`` and ``host_lost`` events) unless the scenario lost
   the run's host.
For the scenario: no container, no CRIU scratch, no store object of these
runs and no incomplete multipart upload is left once they finished.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from harness_ledger import Step, by_run, read
from harness_stack import TERMINAL, Stack, describe, status_name
from helpers import assert_eventually

from torpor import RPCError
from torpor._proto.v1 import common_pb2

SLACK = 1.5
"""Seconds of scheduling noise allowed on top of a periodic checkpoint's period and duration."""


@dataclass
class Expect:
    run_id: str
    task: str
    steps: int
    host_lost: bool = False
    """The scenario lost this run's host: host failures may be spent and steps since the checkpoint redone."""
    periodic: float = 0.0
    """The task's checkpoint_every (0 if none)."""


@dataclass
class Copy:
    key: tuple[str, str]  # (host, copy id)
    steps: list[Step] = field(default_factory=list)
    generation: int | None = None

    @property
    def first(self) -> Step:
        return self.steps[0]

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def __str__(self) -> str:
        return (f"copy {self.key[1]} on {self.key[0]} (generation {self.generation}): steps "
                f"{self.first.step}..{self.last.step} at {self.first.t:.3f}..{self.last.t:.3f}")


def _secs(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def copies_of(steps: list[Step], run: common_pb2.Run | None) -> tuple[list[Copy], list[str]]:
    """Split a run's ledger into copies in order of appearance; violations of "one copy at a time"."""
    copies: dict[tuple[str, str], Copy] = {}
    for s in steps:
        copies.setdefault((s.host, s.copy), Copy((s.host, s.copy))).steps.append(s)
    ordered = list(copies.values())  # by first step: dicts keep insertion order
    gens = []
    for e in (run.events if run is not None else ()):
        m = re.search(r"generation (\d+)", e.detail)
        if e.type in ("starting", "restoring") and m:
            gens.append((_secs(e.time), e.agent, int(m.group(1))))
    for c in ordered:
        before = [g for t, agent, g in gens if agent == c.key[0] and t <= c.first.t]
        c.generation = max(before) if before else None
    # One copy at a time: once a later copy has made a step, no earlier copy makes another.
    problems = []
    rank = {c.key: i for i, c in enumerate(ordered)}
    for old in ordered:
        newer_start = min((c.first.t for c in ordered if rank[c.key] > rank[old.key]), default=None)
        if newer_start is None:
            continue
        late = [s for s in old.steps if s.t > newer_start]
        if late:
            newer = next(c for c in ordered if c.first.t == newer_start)
            problems.append(f"two copies ran at once: {old} made steps {late[0].step}..{late[-1].step} "
                            f"({len(late)} steps, until {late[-1].t:.3f}) after {newer} had begun at "
                            f"{newer_start:.3f}")
    return ordered, problems


def check_ledger(expect: Expect, steps: list[Step], run: common_pb2.Run | None,
                 lease: float = 0.0) -> tuple[list[str], list[Copy]]:
    copies, problems = copies_of(steps, run)
    if not copies:
        return ["no step of the run reached the ledger"], copies
    for c in copies:
        prev = None
        for s in c.steps:
            if prev is not None and s.step not in (prev, prev + 1):
                problems.append(f"{c}: step {s.step} followed step {prev} inside one copy")
            prev = s.step
    if copies[0].first.step != 1:
        problems.append(f"the first copy began at step {copies[0].first.step}")
    durations = [c.duration_ms / 1000 for c in run.checkpoints] if run is not None else []
    for old, new in itertools.pairwise(copies):
        start, stop = new.first.step, old.last.step
        if start > stop + 1:
            problems.append(f"steps {stop + 1}..{start - 1} lost between {old} and {new}")
        if start == 1 and stop >= 1:
            if not expect.host_lost:
                problems.append(f"{new} started the run over, with no host lost")
            continue
        if expect.task == "ckpt-loop":
            if start != new.first.ckpt + 1:
                problems.append(f"{new} restored from the checkpoint after step {new.first.ckpt} but began at {start}")
            seen_returned = max((s.ckpt for s in old.steps), default=0)
            if new.first.ckpt < seen_returned:
                problems.append(f"{new} restored from the checkpoint after step {new.first.ckpt}, older than the one "
                                f"after step {seen_returned} that {old} saw complete")
        elif start <= stop:
            redone = [s for s in old.steps if s.step >= start]
            # A copy on a host that was cut off or hung takes no checkpoint, but runs until its lease is over.
            window = expect.periodic + max(durations, default=0) + SLACK + (lease if expect.host_lost else 0)
            if not expect.periodic and expect.host_lost:
                # No periodic checkpoint: a host lost takes with it every step since the image the old copy was
                # restored from, however long it ran, and the new copy starts from that image again (or a newer
                # one): never from an older one than the old copy began with.
                if start < old.first.step:
                    problems.append(f"{new} began at step {start}, before {old} had begun (step "
                                    f"{old.first.step}): it came from an older image than the one {old} ran from")
            elif not expect.periodic or old.last.t - redone[0].t > window:
                problems.append(f"{new} redid steps {start}..{stop}, made by {old} over "
                                f"{old.last.t - redone[0].t:.2f}s before it stopped (allowed: "
                                f"{'none' if not expect.periodic else f'{window:.2f}s'})")
    return problems, copies


def check_output(expect: Expect, run: common_pb2.Run, copies: list[Copy]) -> list[str]:
    problems = []
    out = json.loads(run.output_json or "null")
    if not isinstance(out, dict) or "steps" not in out:
        return [f"output is not the workload's: {out!r}"]
    numbers = [s[0] for s in out["steps"]]
    if numbers != list(range(1, expect.steps + 1)):
        problems.append(f"output steps are {numbers}, not 1..{expect.steps}")
    if not out.get("ballast_intact"):
        problems.append("the task's memory changed across its checkpoints (ballast checksum differs)")
    in_ledger = {(s.copy, s.step) for c in copies for s in c.steps}
    missing = [(n, copy) for n, copy, _, _ in out["steps"] if (copy, n) not in in_ledger]
    if missing:
        problems.append(f"output steps never recorded by that copy in the ledger: {missing[:5]}")
    return problems


def check_spent(expect: Expect, run: common_pb2.Run, host_failures: int | None) -> list[str]:
    problems = []
    if run.attempt != 1 or len(run.attempts) != 1:
        problems.append(f"an attempt was spent: attempt {run.attempt}, {len(run.attempts)} attempt rows")
    lost = [e for e in run.events if e.type == "host_lost"]
    if not expect.host_lost and (lost or host_failures):
        problems.append(f"host failures spent with no host lost: runs.host_failures={host_failures}, "
                        f"events: {[e.detail for e in lost]}")
    return problems


class Checker:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def host_failures(self, run_id: str) -> int | None:
        try:
            rows = self.stack.postgres.query(self.stack.dbname, "SELECT host_failures FROM runs WHERE id = %s", run_id)
        except Exception:  # noqa: BLE001 - reported as unknown
            return None
        return rows[0]["host_failures"] if rows else None

    def finished(self, expects: list[Expect], timeout: float) -> dict[str, common_pb2.Run]:
        """The runs once all are finished, or as they are at ``timeout`` (a stuck one is reported, not waited on)."""
        runs: dict[str, common_pb2.Run] = {}

        def done() -> bool:
            for e in expects:
                if e.run_id not in runs or status_name(runs[e.run_id]) not in TERMINAL:
                    try:
                        runs[e.run_id] = self.stack.client().get_run(e.run_id)
                    except RPCError:
                        return False
            return all(status_name(r) in TERMINAL for r in runs.values())
        try:
            assert_eventually(done, timeout=timeout, interval=0.1)
        except AssertionError:
            pass
        return runs

    def violations(self, expects: list[Expect], runs: dict[str, common_pb2.Run]) -> dict[str, list[str]]:
        ledger = by_run(read(self.stack.ledger_files()))
        out: dict[str, list[str]] = {}
        for e in expects:
            run = runs.get(e.run_id)
            if run is None:
                out[e.run_id] = ["could not be read from the coordinator"]
                continue
            problems = []
            if status_name(run) not in TERMINAL:
                problems.append(f"stuck: still {status_name(run)} when the others were done or time ran out")
            elif status_name(run) != "COMPLETED":
                problems.append(f"ended {status_name(run)}: {run.error}")
            ledger_problems, copies = check_ledger(e, ledger.get(e.run_id, []), run, self.stack.lease)
            problems += ledger_problems
            if status_name(run) == "COMPLETED":
                problems += check_output(e, run, copies)
            problems += check_spent(e, run, self.host_failures(e.run_id))
            if problems:
                story = "\n".join(f"    {c}" for c in copies)
                out[e.run_id] = problems + [f"copies:\n{story}", describe(run)]
        return out

    def leftovers(self, run_ids: list[str], timeout: float = 15.0) -> list[str]:
        """What is still there after ``timeout``: containers, CRIU scratch, store objects and uploads of these runs."""
        def left() -> list[str]:
            found = []
            for a in self.stack.agents.values():
                found += [f"container {c['id']} ({c['status']}) on {a.name}" for c in a.containers()]
                found += [f"scratch {s} on {a.name}" for s in a.scratch()]
            prefixes = tuple(f"store/runs/{r}/" for r in run_ids)
            found += [f"store object {k}" for k in self.stack.store_keys() if k.startswith(prefixes)]
            found += [f"incomplete multipart upload {k}" for k in self.stack.multipart_uploads()
                      if k.startswith(prefixes)]
            return found

        last: list[str] = []

        def clean() -> bool:
            last[:] = left()
            return not last
        try:
            assert_eventually(clean, timeout=timeout, interval=0.25)
        except AssertionError:
            pass
        return last

    def verify(self, expects: list[Expect], *, timeout: float = 35.0) -> None:
        """Wait for the runs to finish, then fail with every violation found, run by run."""
        runs = self.finished(expects, timeout)
        problems = self.violations(expects, runs)
        # A host that died comes back: an agent cleans at start what its dead predecessor left on disk.
        dead = [a for a in self.stack.agents.values() if not a.alive]
        for a in dead:
            a.reap()
            a.start()
        for a in dead:
            a.wait_registered()
        # A stuck run keeps its container and snapshots: look once, do not wait for them to go.
        stuck = any(status_name(r) not in TERMINAL for r in runs.values())
        left = self.leftovers([e.run_id for e in expects], timeout=0 if stuck else 15.0)
        report = []
        for run_id, items in problems.items():
            report.append(f"run {run_id}:\n  - " + "\n  - ".join(items))
        if left:
            report.append("left behind:\n  - " + "\n  - ".join(left))
        assert not report, "\n".join(report)
