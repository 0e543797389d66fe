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
    v1, _blob = _bundle.build(src)
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
    _, other_blob = _bundle.build(src)
    bad = "0" * _bundle.VERSION_LEN
    store.put_bytes(_bundle.bundle_key(bad), other_blob)
    with pytest.raises(IntegrityError, match="does not match"):
        _bundle.fetch(store, bad, tmp_path / "cache")
    with pytest.raises(ConfigError, match="not a deployment version"):
        _bundle.fetch(store, "../../etc", tmp_path / "cache")


def test_bundle_settings_default(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["tasks"]\n'))
    assert p.exclude == () and p.max_bundle_bytes == 50 << 20 == _bundle.DEFAULT_LIMIT_BYTES


def test_bundle_settings(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["tasks"]\nexclude = ["data/", "!data/keep/"]\n'
                                       'max_bundle_mb = 1.5\n'))
    assert p.exclude == ("data/", "!data/keep/") and p.max_bundle_bytes == 3 << 19


def test_max_bundle_mb_ceiling_is_the_bundle_ceiling(tmp_path):
    p = load_project(project(tmp_path, 'project = "x"\nmodules = ["tasks"]\nmax_bundle_mb = 256\n'))
    assert p.max_bundle_bytes == _bundle.MAX_BUNDLE_BYTES


@pytest.mark.parametrize("setting, fragments", [
    ('exclude = "data/"', ["'exclude' must be a list of gitignore patterns", 'exclude = ["data/", "*.csv"]']),
    ('exclude = ["data/", 3]', ["'exclude' must be a list", "3"]),
    ('exclude = ["!"]', ["'exclude' pattern '!' is not a valid gitignore pattern", "e.g. exclude ="]),
    ('exclude = [""]', ["'exclude' pattern '' matches nothing"]),
    ('exclude = ["# data"]', ["matches nothing"]),
    ('exclude = ["a\\nb"]', ["line break"]),
    ("max_bundle_mb = 0", ["'max_bundle_mb' must be a number of megabytes above 0", "max_bundle_mb = 100", "got 0"]),
    ("max_bundle_mb = -5", ["'max_bundle_mb' must be", "got -5"]),
    ('max_bundle_mb = "50"', ["'max_bundle_mb' must be", "got '50'"]),
    ("max_bundle_mb = true", ["'max_bundle_mb' must be", "got True"]),
    ("max_bundle_mb = nan", ["'max_bundle_mb' must be"]),
    ("max_bundle_mb = 300", ["got 300", "256 is the most", 'exclude = ["data/"]']),
    ("max_bundle_bytes = 5", ["unknown setting(s) max_bundle_bytes", "known: project, modules, exclude, max_bundle_mb"]),
])
def test_bad_bundle_settings(tmp_path, setting, fragments):
    with pytest.raises(ConfigError) as exc:
        load_project(project(tmp_path, f'project = "x"\nmodules = ["tasks"]\n{setting}\n'))
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path.resolve() / 'torpor.toml'}: ")
    for fragment in fragments:
        assert fragment in msg
