"""Environments: what torpor.toml and requirements.txt ask for, reproducible packing, nothing unverified unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest

from torpor._errors import ConfigError, IntegrityError
from torpor.agent._environments import Environments, WrongPython, environment_key, pack, unused_environments
from torpor.agent._hygiene import make_read_only
from torpor.cli._environment import environment_id
from torpor.sdk._project import load_project
from torpor.store import open_store

DAY = 86400.0


def _project(tmp: Path, toml: str, requirements: str | None = None) -> Path:
    (tmp / "torpor.toml").write_text('project = "p"\nmodules = ["t"]\n' + toml)
    if requirements is not None:
        (tmp / "requirements.txt").write_text(requirements)
    return tmp


def test_dependencies_come_from_torpor_toml_and_requirements_txt_without_repeats(tmp_path):
    root = _project(tmp_path, 'dependencies = ["numpy>=1.26", "httpx"]\npython = "3.11"\n',
                    "# pinned elsewhere\nhttpx\npandas>=2 ; python_version >= '3.10'  # frames\n\n")
    p = load_project(root)
    assert p.requirements == ("numpy>=1.26", "httpx", "pandas>=2 ; python_version >= '3.10'")
    assert p.python == "3.11"


@pytest.mark.parametrize("toml,req,fragment", [
    ('dependencies = "numpy"\n', None, "must be a list of requirements"),
    ('python = "three"\n', None, "'python' must be a version"),
    ("", "--index-url https://example.invalid/simple\n", "only requirements"),
])
def test_bad_dependency_settings_say_what_to_write(tmp_path, toml, req, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_project(_project(tmp_path, toml, req))


def test_the_same_packages_pack_to_the_same_bytes_and_the_id_follows_the_pinned_set(tmp_path):
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("x = 1\n")
    (site / "pkg" / "lib.so").write_bytes(b"\x7fELF" + bytes(1000))
    a, b = tmp_path / "a.tar.zst", tmp_path / "b.tar.zst"
    assert pack(site, a) == pack(site, b) and a.read_bytes() == b.read_bytes()
    assert environment_id(["b==1", "a==2"], "3.11") == environment_id(["a==2", "b==1"], "3.11")
    assert environment_id(["a==2"], "3.11") != environment_id(["a==3"], "3.11") != environment_id(["a==3"], "3.12")


def test_an_agent_unpacks_only_what_matches_its_sha256_and_refuses_another_python(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "mod.py").write_text("VALUE = 42\n")
    archive = tmp_path / "env.tar.zst"
    sha, _ = pack(site, archive)
    store = open_store(f"file://{tmp_path / 'store'}")
    env_id = "env-" + "ab" * 12
    store.put_bytes(environment_key(env_id), archive.read_bytes())
    envs = Environments(store, tmp_path / "cache", "3.11")
    with pytest.raises(ConfigError, match="built for Python 3.12, and this agent's Python is 3.11"):
        envs.get(env_id, sha, "3.12")
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        envs.get(env_id, "0" * 64, "3.11")
    assert not (tmp_path / "cache" / env_id).exists() and not [p for p in (tmp_path / "cache").iterdir()]
    got = envs.get(env_id, sha, "3.11")
    assert (got / "mod.py").read_text() == "VALUE = 42\n" and (got / "mod.py").stat().st_mode & 0o777 == 0o444


def _unpacked(cache: Path, env_id: str, age: float) -> Path:
    import os
    import time

    d = cache / env_id
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "m.py").write_text("x = 1\n")
    make_read_only(d)
    t = time.time() - age
    os.utime(d, (t, t))
    return d


def test_unused_environments_go_after_their_ttl_and_ones_in_use_or_recent_stay(tmp_path):
    cache = tmp_path / "envs"
    old, busy, recent = ("env-" + c * 24 for c in "abc")
    for env_id, age in ((old, 3 * DAY), (busy, 3 * DAY), (recent, 60)):
        _unpacked(cache, env_id, age)
    (cache / ".env-dddddddddddddddddddddddd.x1y2").mkdir()  # a fetch under way: never collected
    assert unused_environments(cache, {busy}, DAY) == {old}
    envs = Environments(open_store(f"file://{tmp_path / 'store'}"), cache, "3.11")
    assert envs.collect({busy}, DAY) == [old]
    assert sorted(p.name for p in cache.iterdir()) == sorted([busy, recent, ".env-dddddddddddddddddddddddd.x1y2"])
    assert envs.collect(set(), 0) and not (cache / busy).exists() and not (cache / recent).exists()


def test_a_used_environment_is_touched_so_its_ttl_starts_again(tmp_path):
    cache = tmp_path / "envs"
    env_id = "env-" + "e" * 24
    _unpacked(cache, env_id, 3 * DAY)
    envs = Environments(open_store(f"file://{tmp_path / 'store'}"), cache, "3.11")
    assert envs.get(env_id, "0" * 64, "3.11") == cache / env_id  # already here: no fetch, no check
    assert unused_environments(cache, set(), DAY) == set()


def test_leftovers_of_an_interrupted_fetch_or_removal_are_reaped_at_start(tmp_path):
    cache = tmp_path / "envs"
    kept = _unpacked(cache, "env-" + "f" * 24, 0)
    half = cache / ".env-ffffffffffffffffffffffff.k2j3"
    (half / "pkg").mkdir(parents=True)
    make_read_only(half)
    (cache / ".env-ffffffffffffffffffffffff.a1.tar.zst").write_bytes(b"partial")
    envs = Environments(open_store(f"file://{tmp_path / 'store'}"), cache, "3.11")
    assert len(envs.reap_leftovers()) == 2 and [p for p in cache.iterdir()] == [kept]


def test_another_python_is_refused_as_wrong_python_naming_both(tmp_path):
    envs = Environments(open_store(f"file://{tmp_path / 'store'}"), tmp_path / "envs", "3.11")
    with pytest.raises(WrongPython, match=r"built for Python 3\.12, and this agent's Python is 3\.11"):
        envs.get("env-" + "0" * 24, "0" * 64, "3.12")


def test_concurrent_runs_needing_one_environment_wait_on_a_single_fetch(tmp_path):
    import threading

    site = tmp_path / "site"
    site.mkdir()
    (site / "mod.py").write_text("VALUE = 1\n")
    archive = tmp_path / "env.tar.zst"
    sha, _ = pack(site, archive)
    env_id = "env-" + "cd" * 12
    store = open_store(f"file://{tmp_path / 'store'}")
    store.put_bytes(environment_key(env_id, sha), archive.read_bytes())
    opened: list[str] = []
    gate = threading.Event()
    real_open = store.open_reader

    def slow_open(key, **kw):  # type: ignore[no-untyped-def]
        opened.append(key)
        gate.wait(5)  # the others arrive while this one is still fetching
        return real_open(key, **kw)

    store.open_reader = slow_open  # type: ignore[method-assign]
    envs = Environments(store, tmp_path / "cache", "3.11")
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(envs.get(env_id, sha, "3.11", environment_key(env_id, sha))))
               for _ in range(4)]
    for t in threads:
        t.start()
    threading.Event().wait(0.3)  # all four have asked by now; one is inside the store
    gate.set()
    for t in threads:
        t.join(10)
    assert got == [tmp_path / "cache" / env_id] * 4 and opened == [environment_key(env_id, sha)]
