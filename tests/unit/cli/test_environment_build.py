"""Building an environment on the deploying machine: once per pinned set, safe beside a concurrent deploy."""

from __future__ import annotations

import io
from pathlib import Path

from torpor.cli import _environment as envs
from torpor.cli._progress import Stage


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_stage_shows_its_label_and_time_on_a_tty_and_nothing_elsewhere():
    tty, pipe = _Tty(), io.StringIO()
    with Stage("building environment env-x", stream=tty):
        pass
    with Stage("building environment env-x", stream=pipe):
        pass
    assert "building environment env-x: done in" in tty.getvalue() and pipe.getvalue() == ""
    failed = _Tty()
    try:
        with Stage("resolving", stream=failed):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "resolving: failed" in failed.getvalue()


def test_a_set_is_built_once_and_a_concurrent_build_of_it_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    installs: list[list[str]] = []

    def fake_uv(args: list[str], what: str) -> str:  # uv's install, writing into --target
        installs.append(args)
        target = Path(args[args.index("--target") + 1])
        (target / "pkg").mkdir()
        (target / "pkg" / "__init__.py").write_text("built = 1\n")
        if len(installs) == 2:  # meanwhile another deploy of the same set finished first
            done = envs.cache_dir() / envs.environment_id(["pkg==1"], "3.11") / "site"
            done.mkdir()
            (done / "theirs").write_text("")
        return ""

    monkeypatch.setattr(envs, "_run", fake_uv)
    first = envs.build(["pkg==1"], "3.11")
    assert (first.site / "pkg" / "__init__.py").exists() and len(installs) == 1
    assert envs.build(["pkg==1"], "3.11").site == first.site and len(installs) == 1, "built once"
    import shutil

    shutil.rmtree(first.site)
    second = envs.build(["pkg==1"], "3.11")  # loses the race: the other deploy's copy is kept, no error
    assert (second.site / "theirs").exists() and len(installs) == 2
    assert [p.name for p in second.site.parent.iterdir()] == ["site"], "no temporary directory or file is left"
