"""Which agent may take a run: what the run needs, what each agent offers.

A claim round (coordinator/_scheduler.py) asks this module, for each run it
would claim, which of its agents with a free slot can take it. Today one need
is checked: a run in network mode "host" (asked for by its task, or the mode
its checkpoint was taken in) goes only to an agent started with
``--allow-host-network``. A run no agent can take is left where it is, with the
reason in ``runs.unplaced`` (shown by ``torpor runs show``), and is tried again
each round; it does not hold back the runs behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torpor._proto.v1 import common_pb2
from torpor.coordinator._db import Cursor
from torpor.coordinator._states import add_event


@dataclass(frozen=True)
class Offer:
    """What one agent offers, from the facts it last reported."""

    allow_host_network: bool = False


@dataclass(frozen=True)
class Need:
    """What one run needs of its agent."""

    host_network: bool = False


def offer_of(facts: bytes | None) -> Offer:
    f = common_pb2.HostFacts()
    if facts:
        f.ParseFromString(bytes(facts))
    return Offer(allow_host_network=f.allow_host_network)


def need_of(settings: Any, checkpoint: dict[str, Any] | None) -> Need:
    """A restore needs what its checkpoint was taken with; a start what its task asks for."""
    mode = (checkpoint or {}).get("network") or (settings.network if settings is not None else "")
    return Need(host_network=mode == "host")


def refusal(need: Need, offer: Offer) -> str | None:
    """Why this agent cannot take the run, or None if it can."""
    if need.host_network and not offer.allow_host_network:
        return "network='host'"
    return None


def unplaced_reason(need: Need) -> str:
    if need.host_network:
        return ("waiting for an agent that allows network='host': no connected agent with a free slot was started "
                "with --allow-host-network (start one with it, or deploy the task with network='egress' or 'none')")
    return "waiting for an agent that can take it"


def mark_unplaced(cur: Cursor, run: dict[str, Any], reason: str) -> None:
    """Record why the run waits (once per change of reason, with an event for the timeline)."""
    if run.get("unplaced") == reason:
        return
    cur.execute("UPDATE runs SET unplaced = %s WHERE id = %s", (reason, run["id"]))
    add_event(cur, run, "unplaced", reason)


def choose(free: dict[str, int], offers: dict[str, Offer], need: Need) -> str | None:
    """The agent with the most free slots among those that can take the run."""
    able = [a for a, n in free.items() if n > 0 and refusal(need, offers.get(a, Offer())) is None]
    return max(able, key=lambda a: free[a]) if able else None
