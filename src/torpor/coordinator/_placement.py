"""Which agent may take a run: what the run needs, what each agent offers.

A claim round (coordinator/_scheduler.py) asks this module, for each run it
would claim, which of its agents with a free slot can take it:

- a run in network mode "host" (asked for by its task, or the mode its
  checkpoint was taken in) goes only to an agent started with
  ``--allow-host-network``;
- a run whose task sets ``memory=`` goes only to an agent whose offered memory
  (``--memory``, the host's total by default) minus the limits of the runs
  placed there already leaves room for it, and whose host has that much
  available now. Runs without a limit count for nothing (and are not limited:
  docs/security.md);
- a run whose deployment has an environment (third-party packages, built for
  one Python) goes only to an agent that reports that Python.

A run no agent can take is left where it is, with the reason in
``runs.unplaced`` (shown by ``torpor runs show``), and is tried again each
round; it does not hold back the runs behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torpor._proto.v1 import common_pb2
from torpor._sizes import format_size
from torpor.coordinator._db import Cursor
from torpor.coordinator._states import add_event


@dataclass
class Offer:
    """What one agent offers this round, from the facts it last reported and the runs placed on it."""

    allow_host_network: bool = False
    memory_offered: int = 0  # 0: not reported (an agent before memory placement): not checked
    memory_room: int = 0  # offered minus the limits of the runs placed on it, this round's included
    memory_available: int = 0  # what its host had available at its last heartbeat
    python: str = ""  # "3.11": the Python its tasks run on; "": not reported, not checked (the agent refuses)

    def take(self, need: "Need") -> None:
        self.memory_room -= need.memory
        self.memory_available -= need.memory


@dataclass(frozen=True)
class Need:
    """What one run needs of its agent."""

    host_network: bool = False
    memory: int = 0
    python: str = ""  # the Python the deployment's environment is built for; "": no environment


def offer_of(facts: bytes | None, committed_memory: int = 0) -> Offer:
    f = common_pb2.HostFacts()
    if facts:
        f.ParseFromString(bytes(facts))
    offered = f.memory_offered_bytes
    return Offer(allow_host_network=f.allow_host_network, memory_offered=offered,
                 memory_room=offered - committed_memory, memory_available=f.memory_available_bytes,
                 python=f.python_version)


def need_of(run: dict[str, Any], settings: Any, checkpoint: dict[str, Any] | None, python: str = "") -> Need:
    """A restore needs the network its checkpoint was taken with; a start what its task asks for.

    ``python``: the Python the deployment's environment is built for ("" without one).
    """
    mode = (checkpoint or {}).get("network") or (settings.network if settings is not None else "")
    return Need(host_network=mode == "host", memory=max(0, int(run.get("memory_bytes") or 0)), python=python)


def refusal(need: Need, offer: Offer) -> str | None:
    """What this agent lacks for the run, or None if it can take it."""
    if need.host_network and not offer.allow_host_network:
        return "host network"
    if need.python and offer.python and need.python != offer.python:
        return "python"
    if need.memory and offer.memory_offered:
        if need.memory > offer.memory_room or need.memory > offer.memory_available:
            return "memory"
    return None


def choose(free: dict[str, int], offers: dict[str, Offer], need: Need) -> str | None:
    """The agent with the most free slots among those that can take the run."""
    able = [a for a, n in free.items() if n > 0 and refusal(need, offers.get(a, Offer())) is None]
    return max(able, key=lambda a: free[a]) if able else None


def unplaced_reason(need: Need, free: dict[str, int], offers: dict[str, Offer]) -> str:
    """Why no agent with a free slot took the run, in words that say what would let it go."""
    if need.python and offers and not any(o.python in ("", need.python) for o in offers.values()):
        runs = ", ".join(sorted({o.python for o in offers.values()}))
        return (f"needs an agent with Python {need.python}, which its deployment's packages are built for; the "
                f"connected agents run Python {runs}: deploy the project again for theirs, or connect an agent "
                f"with Python {need.python}")
    if need.host_network and not any(o.allow_host_network for o in offers.values()):
        return ("waiting for an agent that allows network='host': no connected agent was started with "
                "--allow-host-network (start one with it, or deploy the task with network='egress' or 'none')")
    if need.memory:
        want = format_size(need.memory)
        candidates = {a: o for a, o in offers.items() if not need.host_network or o.allow_host_network}
        largest = max((o.memory_offered for o in candidates.values()), default=0)
        if largest and need.memory > largest:
            return (f"needs {want} of memory; the most any connected agent offers is {format_size(largest)} "
                    "(start an agent with more, or with a larger --memory; or lower the task's memory=)")
        if any(free.get(a, 0) > 0 for a in candidates):
            return (f"needs {want} of memory; no agent with a free slot has that much left now (the memory it "
                    "offers is taken by the memory= of the runs on it, or in use on its host); it starts when "
                    "runs there end")
    if need.host_network:
        return "waiting for a free slot on an agent that allows network='host'"
    return "waiting for an agent that can take it"


def mark_unplaced(cur: Cursor, run: dict[str, Any], reason: str) -> None:
    """Record why the run waits (once per change of reason, with an event for the timeline)."""
    if run.get("unplaced") == reason:
        return
    cur.execute("UPDATE runs SET unplaced = %s WHERE id = %s", (reason, run["id"]))
    add_event(cur, run, "unplaced", reason)
