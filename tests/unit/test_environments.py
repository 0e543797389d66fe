"""Environments: what torpor.toml and requirements.txt ask for, reproducible packing, nothing unverified unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest

from torpor._errors import ConfigError, IntegrityError
from torpor.agent._environments import Environments, environment_key, pack
from torpor.cli._environment import environment_id
from torpor.sdk._project import load_project
from torpor.store import open_store


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
