"""scripts/bench.py: reading a benchmark's output and rewriting only the measured block of the doc."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "scripts" / "bench.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_last_json_object_is_the_result_whatever_printed_before():
    out = 'downloading...\n{"progress": 1}\n{\n "bench": "x",\n "nested": {\n  "a": 1\n }\n}\n'
    assert bench.parse_output(out) == {"bench": "x", "nested": {"a": 1}}
    with pytest.raises(ValueError, match="no JSON object"):
        bench.parse_output("Traceback (most recent call last):\n  boom\n")


def test_leaves_are_named_by_their_path_and_sizes():
    got = dict(bench.flatten({"bench": "checkpoint", "results": [{"heap_mb": 64, "store": "s3", "restore_s": 0.1}],
                              "latency": {"p99_ms": 6.2}, "requirements": ["numpy==2", "pandas==3"]}))
    assert got == {"results[64MB s3].heap_mb": 64, "results[64MB s3].store": "s3", "results[64MB s3].restore_s": 0.1,
                   "latency.p99_ms": 6.2, "requirements": "numpy==2, pandas==3"}


def test_only_the_measured_block_is_rewritten():
    doc = "# Benchmarks\n\nIntro.\n\n## By hand\n\nAnalysis.\n"
    first = bench.rewrite(doc, f"{bench.BEGIN}\nold\n{bench.END}")
    assert first.startswith("# Benchmarks\n\nIntro.\n") and first.endswith("## By hand\n\nAnalysis.\n")
    second = bench.rewrite(first, f"{bench.BEGIN}\nnew\n{bench.END}")
    assert "old" not in second and second.count(bench.BEGIN) == 1 and "new" in second
    assert second.replace("new", "old") == first
    with pytest.raises(SystemExit, match="only one of the markers"):
        bench.rewrite(doc + bench.BEGIN, "x")


def test_the_block_names_each_benchmark_its_arguments_and_when():
    block = bench.render({"waits": {"bench": "waits", "mb": 20, "_measured": {"at": "2026-12-07 23:50 UTC",
                                                                               "args": ["--mb", "20"], "took_s": 40}}},
                         "2 cores")
    assert "### `bench/waits.py --mb 20`" in block and "Measured 2026-12-07 23:50 UTC in 40 s." in block
    assert "| mb | 20 |" in block and "on 2 cores" in block
