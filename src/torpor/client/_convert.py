"""Messages as plain JSON-ready dicts (what ``--json`` prints)."""

from __future__ import annotations

import json
from typing import Any

from torpor._proto.v1 import common_pb2, coordinator_pb2


def _time(msg: Any, field: str) -> str | None:
    if not msg.HasField(field):
        return None
    return getattr(msg, field).ToDatetime().isoformat(timespec="milliseconds") + "Z"


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_dict(run: common_pb2.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "task": run.task,
        "version": run.version,
        "status": common_pb2.RunStatus.Name(run.status),
        "attempt": run.attempt,
        "payload": _json(run.payload_json),
        "output": _json(run.output_json),
        "error": run.error or None,
        "traceback": run.traceback or None,
        "tags": list(run.tags),
        "queue": run.queue,
        "concurrency_key": run.concurrency_key or None,
        "idempotency_key": run.idempotency_key or None,
        "parent_run_id": run.parent_run_id or None,
        "agent": run.agent or None,
        "generation": run.generation,
        "metadata": _json(run.metadata_json),
        "waiting": wait_dict(run.waiting) if run.HasField("waiting") else None,
        "unplaced": run.unplaced or None,
        "created_at": _time(run, "created_at"),
        "started_at": _time(run, "started_at"),
        "finished_at": _time(run, "finished_at"),
        "checkpoints": [checkpoint_dict(c) for c in run.checkpoints],
        "attempts": [
            {"number": a.number, "status": common_pb2.RunStatus.Name(a.status), "error": a.error or None,
             "agent": a.agent or None, "started_at": _time(a, "started_at"), "finished_at": _time(a, "finished_at"),
             "log_bytes": a.log_bytes, "log_dropped_bytes": a.log_dropped_bytes}
            for a in run.attempts
        ],
        "events": [
            {"time": _time(e, "time"), "type": e.type, "detail": e.detail, "agent": e.agent or None, "attempt": e.attempt}
            for e in run.events
        ],
    }


def wait_dict(w: common_pb2.RunWait) -> dict[str, Any]:
    return {"wait_id": w.wait_id, "kind": w.kind, "due_at": _time(w, "due_at"), "token_id": w.token_id or None,
            "child_run_ids": list(w.child_run_ids), "since": _time(w, "since")}


def checkpoint_dict(c: common_pb2.Checkpoint) -> dict[str, Any]:
    return {"id": c.id, "kind": common_pb2.CheckpointKind.Name(c.kind), "size_bytes": c.size_bytes,
            "raw_bytes": c.raw_bytes, "duration_ms": c.duration_ms, "agent": c.agent, "location": c.location,
            "generation": c.generation, "created_at": _time(c, "created_at"), "key_id": c.key_id or None,
            "network": c.network or None}


def agent_dict(a: coordinator_pb2.AgentInfo) -> dict[str, Any]:
    return {"name": a.name, "alive": a.alive, "slots": a.slots, "slots_used": a.slots_used, "labels": dict(a.labels),
            "hostname": a.facts.hostname, "cpus": a.facts.cpus, "memory_bytes": a.facts.memory_bytes,
            "criu_version": a.facts.criu_version, "python_version": a.facts.python_version or None,
            "network": a.facts.network or None,
            "allow_host_network": a.facts.allow_host_network, "lease_expires_at": _time(a, "lease_expires_at"),
            "connected_at": _time(a, "connected_at")}
