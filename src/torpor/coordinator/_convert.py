"""Database rows to protobuf messages."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from torpor._proto.v1 import common_pb2, coordinator_pb2
from torpor.coordinator._db import Cursor


def ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def run_summary(row: dict[str, Any]) -> common_pb2.Run:
    return common_pb2.Run(
        id=row["id"], task=row["task"], version=row["version"],
        status=common_pb2.RunStatus.Value(row["status"]), attempt=row["attempt"],
        payload_json=row["payload_json"], output_json=row["output_json"] or "",
        error=row["error"] or "", traceback=row["traceback"] or "", tags=list(row["tags"]),
        queue=row["queue"], concurrency_key=row["concurrency_key"], idempotency_key=row["idempotency_key"] or "",
        parent_run_id=row["parent_run_id"] or "", agent=row["agent"] or "", generation=row["generation"],
        created_at=ts(row["created_at"]), started_at=ts(row["started_at"]), finished_at=ts(row["finished_at"]),
        metadata_json=row["metadata_json"], unplaced=_unplaced(row),
    )


def _unplaced(row: dict[str, Any]) -> str:
    """Why a run ready to go is not placed; nothing once it is placed or over."""
    waiting = row["status"] == "QUEUED" or (row["status"] == "RESTORING" and not row["agent"])
    return (row.get("unplaced") or "") if waiting else ""


def checkpoint(row: dict[str, Any]) -> common_pb2.Checkpoint:
    return common_pb2.Checkpoint(
        id=row["id"], kind=common_pb2.CheckpointKind.Value(row["kind"]), size_bytes=row["size_bytes"],
        raw_bytes=row["raw_bytes"], duration_ms=row["duration_ms"], agent=row["agent"], location=row["location"],
        generation=row["generation"], created_at=ts(row["created_at"]), key_id=row["key_id"] or "",
        network=row.get("network") or "",
    )


def run_wait(wp: dict[str, Any]) -> common_pb2.RunWait:
    return common_pb2.RunWait(wait_id=wp["wait_id"], kind=wp["kind"], due_at=ts(wp["due_at"]),
                              token_id=wp["token_id"] or "", child_run_ids=list(wp["child_ids"] or []),
                              since=ts(wp["created_at"]))


def run_full(cur: Cursor, row: dict[str, Any]) -> common_pb2.Run:
    run = run_summary(row)
    cur.execute("SELECT * FROM checkpoints WHERE run_id = %s ORDER BY created_at, id", (row["id"],))
    run.checkpoints.extend(checkpoint(c) for c in cur.fetchall())
    cur.execute("SELECT * FROM run_events WHERE run_id = %s ORDER BY id", (row["id"],))
    run.events.extend(
        common_pb2.RunEvent(time=ts(e["time"]), type=e["type"], detail=e["detail"], agent=e["agent"] or "",
                            attempt=e["attempt"])
        for e in cur.fetchall()
    )
    cur.execute("SELECT * FROM attempts WHERE run_id = %s ORDER BY number", (row["id"],))
    run.attempts.extend(
        common_pb2.Attempt(number=a["number"], status=common_pb2.RunStatus.Value(a["status"]), error=a["error"] or "",
                           traceback=a["traceback"] or "", agent=a["agent"] or "", started_at=ts(a["started_at"]),
                           finished_at=ts(a["finished_at"]), log_bytes=a["log_bytes"],
                           log_dropped_bytes=a["log_dropped_bytes"])
        for a in cur.fetchall()
    )
    return run


def agent_info(row: dict[str, Any], now: dt.datetime) -> coordinator_pb2.AgentInfo:
    facts = common_pb2.HostFacts()
    if row["facts"]:
        facts.ParseFromString(bytes(row["facts"]))
    labels = row["labels"] if isinstance(row["labels"], dict) else json.loads(row["labels"] or "{}")
    return coordinator_pb2.AgentInfo(
        name=row["name"], facts=facts, slots=row["slots"], slots_used=row["slots_used"], labels=labels,
        lease_expires_at=ts(row["lease_expires_at"]),
        alive=bool(row["alive"] and row["lease_expires_at"] > now), connected_at=ts(row["connected_at"]),
    )
