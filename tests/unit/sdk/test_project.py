"""torpor.toml, task discovery in a separate process, and bundles."""

from __future__ import annotations

from pathlib import Path

import pytest

from torpor import ConfigError, IntegrityError
from torpor.agent import _bundle
from torpor.sdk._project import discover_tasks, load_project
from torpor.store import open_store


def project(tmp_path: Path, toml: str, **files: str) -> Path:
    (tmp_path / "torpor.toml").write_text(toml)
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


TASKS = "from torpor import task\n@task(id='p-one')\ndef one(p):\n    return 1\n"


def test_discovers_tasks(tmp_path):
    p = load_project(project(tmp_path, 'project = "demo"\nmodules = ["tasks"]\n', tasks=TASKS))
    tasks = discover_tasks(p)
    assert [t["id"] for t in tasks] == ["p-one"] and tasks[0]["module"] == "tasks"


@pytest.mark.parametrize("toml, fragment", [
    ('project = "bad name"\nmodules = ["tasks"]\n', "'project'"),
    ('project = "ok"\nmodules = []\n', "'modules'"),
    ('project = "ok"\nmodules = ["tasks"]\nextra = 1\n', "unknown setting"),
    ('project = "ok"\nmodules = [\n', "invalid TOML"),
])
def test_bad_manifest(tmp_path, toml, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_project(project(tmp_path, toml))


def test_missing_manifest_says_what_to_write(tmp_path):
    with pytest.raises(ConfigError, match='project = "my-project"'):
        load_project(tmp_path)


def test_import_failure_is_reported_with_the_traceback(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["tasks"]\n', tasks="import does_not_exist_anywhere\n"))
    with pytest.raises(ConfigError, match="importing tasks failed: ModuleNotFoundError") as exc:
        discover_tasks(p)
    assert "does_not_exist_anywhere" in str(exc.value)


def test_duplicate_ids_across_modules(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["a", "b"]\n', a=TASKS,
                             b=TASKS.replace("def one", "def other")))
    with pytest.raises(ConfigError, match="duplicate task id 'p-one'"):
        discover_tasks(p)


def test_no_tasks(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["tasks"]\n', tasks="X = 1\n"))
    with pytest.raises(ConfigError, match="no @task found"):
        discover_tasks(p)


def test_bundle_version_is_the_content(tmp_path):
    (tmp_path / "p").mkdir()
    src = project(tmp_path / "p", 'project = "x"\nmodules = ["tasks"]\n', tasks=TASKS)
    v1, blob = _bundle.build(src)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "junk.pyc").write_bytes(b"x")
    assert _bundle.build(src)[0] == v1  # caches are not code
    (src / "tasks.py").write_text(TASKS + "# changed\n")
    assert _bundle.build(src)[0] != v1


def test_bundle_fetch_is_read_only_and_verified(tmp_path):
    (tmp_path / "p").mkdir()
    src = project(tmp_path / "p", 'project = "x"\nmodules = ["tasks"]\n', tasks=TASKS)
    store = open_store(f"file://{tmp_path}/store")
    version = _bundle.publish(store, src)
    out = _bundle.fetch(store, version, tmp_path / "cache")
    assert (out / "tasks.py").read_text() == TASKS
    assert not (out / "tasks.py").stat().st_mode & 0o222
    # A bundle that does not match its version is refused.
    other_version, other_blob = _bundle.build(src)
    bad = "0" * _bundle.VERSION_LEN
    store.put_bytes(_bundle.bundle_key(bad), other_blob)
    with pytest.raises(IntegrityError, match="does not match"):
        _bundle.fetch(store, bad, tmp_path / "cache")
    with pytest.raises(ConfigError, match="not a deployment version"):
        _bundle.fetch(store, "../../etc", tmp_path / "cache")
