"""`make bench`: run every benchmark in bench/, keep their JSON, and rewrite the measured block of docs/benchmarks.md.

  sudo .venv/bin/python scripts/bench.py [--quick] [--only NAME,...] [--skip NAME,...]

Each bench/NAME.py prints one JSON object on stdout; it is kept as
bench/results/NAME.json, and docs/benchmarks.md's block between the
``<!-- make bench: begin -->`` and ``<!-- make bench: end -->`` markers is
rewritten from every JSON kept there, with the machine and the date. The rest
of docs/benchmarks.md (what the figures mean, what was tried) is written by
hand and left alone. ``--quick`` runs each with small sizes (minutes, not half
an hour): for checking the benchmarks work, not for figures to quote.

A benchmark that fails is reported, its old JSON kept, the others still run;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"

# name: (full arguments, --quick arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "checkpoint": (["--sizes", "64,512,2048", "--stores", "file,s3"], ["--sizes", "64", "--stores", "file,s3"]),
    "waits": (["--samples", "8", "--mb", "50"], ["--samples", "2", "--mb", "20"]),
    "coordinator": (["--seconds", "30"], ["--seconds", "5", "--samples", "200"]),
    "store": ([], ["--size-mib", "64", "--repeat", "1"]),
    "seal": (["--mb", "512,2048", "--rounds", "5"], ["--mb", "64", "--rounds", "1"]),
    "deps": ([], []),
    "scale": (["--runs", "1000"], ["--runs", "40", "--slots", "8"]),
    "versus_dbos": (["--steps", "200", "--kb", "1024", "--sleep", "30"], ["--steps", "20", "--kb", "64", "--sleep", "3"]),
    "chaos": (["--seed", "1", "--runs", "200", "--faults", "40"], ["--seed", "1", "--runs", "16", "--faults", "3"]),
}


def parse_output(text: str) -> dict[str, Any]:
    """The JSON object a benchmark printed last on stdout (lines of progress may come before it)."""
    starts = [m.start() + (m.group(0) == "\n{") for m in re.finditer(r"^\{|\n\{", text)]
    for begin in reversed(starts):
        try:
            value = json.loads(text[begin:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object at the end of the output")


def run(name: str, args: list[str]) -> tuple[bool, str]:
    t = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args], capture_output=True, text=True,
                          cwd=ROOT)
    took = f"{time.monotonic() - t:.0f} s"
    try:
        result = parse_output(proc.stdout)
    except ValueError as exc:
        return False, f"exit {proc.returncode} after {took}, {exc}: {(proc.stderr or proc.stdout).strip()[-600:]}"
    # A benchmark that measured and then found something wrong (chaos: an invariant broken) still says what it
    # measured: kept, and marked failed in the doc.
    result["_measured"] = {"at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "args": args,
                           "took_s": round(time.monotonic() - t, 1), "exit": proc.returncode}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    if proc.returncode != 0:
        return False, f"exit {proc.returncode} after {took} (its JSON is kept: bench/results/{name}.json)"
    return True, took


def _label(item: dict[str, Any], i: int) -> str:
    parts = [f"{item[k]}" + ("MB" if k in ("heap_mb", "mb") else "") for k in ("heap_mb", "mb", "store", "scratch")
             if k in item]
    return " ".join(parts) or str(i)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, scalar) for every leaf; list items are named by their size/store when they have one."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("_") or k in ("bench", "sha256", "environment_sha256"):
                continue
            yield from flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{_label(v, i)}]")
    elif isinstance(value, list):
        yield prefix, ", ".join(map(str, value))
    else:
        yield prefix, value


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    criu = "?"
    try:
        sys.path.insert(0, str(ROOT / "src"))
        from torpor.agent import find_criu

        criu = find_criu().version
    except Exception:  # noqa: BLE001 - the block still says everything else
        pass
    return (f"{os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}, "
            f"CRIU {criu}")


def render(results: dict[str, dict[str, Any]], host: str) -> str:
    lines = [BEGIN, "", "## Latest `make bench`", "",
             f"Written by `scripts/bench.py` from `bench/results/*.json` on {host}. Each table is one benchmark's "
             "JSON as printed (nested keys joined with dots); what the figures mean is in the sections below.", ""]
    for name, result in sorted(results.items()):
        m = result.get("_measured", {})
        how = " ".join(m.get("args", [])) or "(defaults)"
        lines += [f"### `bench/{name}.py {how}`".replace(" (defaults)`", "`"), "",
                  f"Measured {m.get('at', '?')} in {m.get('took_s', '?')} s."
                  + (f" **It exited with status {m['exit']}**: what it found is below." if m.get("exit") else ""),
                  "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in flatten(result)]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def rewrite(doc: str, block: str) -> str:
    """``doc`` with its measured block replaced by ``block`` (added after the first paragraph when absent)."""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    if BEGIN in doc or END in doc:
        raise SystemExit(f"{DOC} has only one of the markers {BEGIN} / {END}: fix it by hand")
    first_section = doc.find("\n## ")
    if first_section < 0:
        return doc.rstrip("\n") + "\n\n" + block + "\n"
    return doc[:first_section + 1] + block + "\n\n" + doc[first_section + 1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the benchmarks run")
    ap.add_argument("--only", default="", help="comma-separated names of bench/*.py to run")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--render-only", action="store_true", help="rewrite docs/benchmarks.md from the kept JSON")
    args = ap.parse_args()
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n and n not in args.skip.split(",")]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    failed = []
    if not args.render_only:
        for name in names:
            full, quick = BENCHES[name]
            print(f"bench: {name} ...", flush=True)
            ok, detail = run(name, quick if args.quick else full)
            print(f"bench: {name} {'done in ' + detail if ok else 'FAILED: ' + detail}", flush=True)
            if not ok:
                failed.append(name)
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))} if RESULTS.is_dir() else {}
    DOC.write_text(rewrite(DOC.read_text(), render(results, machine())))
    print(f"bench: {DOC.relative_to(ROOT)} rewritten from {len(results)} result(s)"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
