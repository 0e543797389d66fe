"""The committed generated code must be exactly what scripts/gen_protos.py produces."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)], check=True)
    committed = ROOT / "src" / "torpor" / "_proto"
    fresh_files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed_files = sorted(
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert committed_files == fresh_files, "generated file set differs: run 'make proto' and commit the result"
    stale = [str(f) for f in fresh_files if not filecmp.cmp(tmp_path / f, committed / f, shallow=False)]
    assert not stale, f"stale generated code {stale}: run 'make proto' and commit the result"


def test_generated_modules_import() -> None:
    from torpor._proto.v1 import agent_pb2, coordinator_pb2, coordinator_pb2_grpc, runtime_pb2

    assert coordinator_pb2.DESCRIPTOR.package == "torpor.v1"
    assert hasattr(coordinator_pb2_grpc, "CoordinatorServicer")
    assert agent_pb2.DESCRIPTOR.services_by_name["AgentChannel"]
    assert runtime_pb2.RuntimeRequest.DESCRIPTOR.oneofs_by_name["msg"]
