"""Named fault-injection points, for tests that must hit an exact moment.

Production code calls ``hit("agent.before_dump")`` at interesting places; it
does nothing unless a test configured that point (through the agent's
``TORPOR_FAULTS`` environment variable, read by the CLI), e.g.
``agent.before_dump=sleep:3,agent.before_restore=sleep:2``.

Actions: ``sleep:SECONDS``, ``crash`` (the process exits at once, as if the
host died), ``raise`` (the operation fails).
"""

from __future__ import annotations

import logging
import os
import time

from torpor._errors import ConfigError, TorporError

log = logging.getLogger(__name__)

POINTS = {
    "agent.before_dump": "a dump was decided, before CRIU starts",
    "agent.before_record": "the snapshot is durable in the store, before the checkpoint is reported",
    "agent.checkpoint_sent": "a leave-running checkpoint's record was sent, before its acknowledgement is awaited",
    "agent.before_restore": "a restore was received, before the download starts",
    "agent.before_restored_report": "a restored run is running again, before RunStarted reports it",
    "agent.before_resolve": "a WaitResolved found no suspend under way, before it resolves the wait",
}

_active: dict[str, str] = {}


def configure(spec: str) -> None:
    _active.clear()
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = item.partition("=")
        if name not in POINTS:
            raise ConfigError(f"unknown fault point {name!r}; known: {', '.join(sorted(POINTS))}")
        if not (action in ("crash", "raise") or action.startswith("sleep:")):
            raise ConfigError(f"fault {item!r}: the action must be sleep:SECONDS, crash or raise")
        _active[name] = action


def hit(name: str) -> None:
    action = _active.get(name)
    if action is None:
        return
    log.warning("fault point %s: %s", name, action)
    if action.startswith("sleep:"):
        time.sleep(float(action[6:]))
    elif action == "crash":
        os._exit(137)
    else:
        raise TorporError(f"fault injected at {name}")
