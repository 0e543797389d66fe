"""Regenerate src/torpor/_proto from proto/torpor/v1/*.proto.

Usage: python scripts/gen_protos.py [--out DIR]

The output is committed. tests/unit/test_proto_fresh.py runs this script into a
temporary directory and fails when the result differs from the committed code,
so nobody edits generated files by hand or forgets to regenerate them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "src" / "torpor" / "_proto"

# protoc writes imports relative to the proto root ("from torpor.v1 import
# common_pb2"); the package lives under torpor._proto, so rewrite them.
_IMPORT = re.compile(r"^from torpor\.v1 import ", re.MULTILINE)


def generate(out: Path) -> None:
    from grpc_tools import protoc  # dev dependency, pinned in pyproject.toml

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("torpor/v1/*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}/torpor/v1")
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed (see the messages above)")
        generated = Path(tmp) / "torpor" / "v1"
        target = out / "v1"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for src in sorted(generated.iterdir()):
            text = _IMPORT.sub("from torpor._proto.v1 import ", src.read_text())
            (target / src.name).write_text(text)
        (target / "__init__.py").write_text("")
        (out / "__init__.py").write_text('"""Generated from proto/ by scripts/gen_protos.py. Do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    generate(args.out)
    print(f"generated {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
