"""A project directory: ``torpor.toml`` plus its code, and the tasks it declares."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torpor._errors import ConfigError

MANIFEST = "torpor.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KNOWN = ("project", "modules", "exclude", "max_bundle_mb", "dependencies", "python")
REQUIREMENTS = "requirements.txt"
_PYTHON = re.compile(r"^3\.\d{1,2}$")
DEFAULT_MAX_BUNDLE_MB = 50
# The same ceiling as torpor.agent._bundle.MAX_BUNDLE_BYTES (fetch and the coordinator refuse larger bundles);
# not imported from there because this module also runs inside containers. A test checks they agree.
MAX_BUNDLE_MB = 256
MB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Project:
    root: Path
    """The directory holding torpor.toml."""
    name: str
    """``project = "..."`` in torpor.toml."""
    modules: tuple[str, ...]
    """Modules imported to find the tasks (``modules = ["tasks"]``)."""
    exclude: tuple[str, ...] = ()
    """Gitignore patterns, relative to root, left out of the bundle on top of .gitignore (``exclude = ["data/"]``)."""
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_MB * MB
    """Limit on the bundle's packaged (uncompressed) files; ``max_bundle_mb = 50`` in torpor.toml, 1 MB = 2**20 bytes."""
    requirements: tuple[str, ...] = ()
    """Third-party packages (PEP 508): torpor.toml's ``dependencies`` and the lines of requirements.txt."""
    python: str | None = None
    """``python = "3.11"``: the Python the environment is built for (default: the one the agents report)."""


def load_project(root: Path) -> Project:
    root = root.resolve()
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{root} has no {MANIFEST}; create one with:\n  project = \"my-project\"\n  modules = [\"tasks\"]")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    name = data.get("project")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{path}: 'project' must be a name of letters, digits, '.', '_' or '-' (got {name!r})")
    modules = data.get("modules")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and _MODULE.match(m) for m in modules):
        raise ConfigError(f"{path}: 'modules' must be a non-empty list of module names, e.g. [\"tasks\"] (got {modules!r})")
    unknown = sorted(set(data) - set(_KNOWN))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(_KNOWN)})")
    python = data.get("python")
    if python is not None and (not isinstance(python, str) or not _PYTHON.match(python)):
        raise ConfigError(f"{path}: 'python' must be a version like \"3.11\" (got {python!r})")
    return Project(root=root, name=name, modules=tuple(modules), exclude=exclude_patterns(path, data.get("exclude", [])),
                   max_bundle_bytes=_max_bundle_bytes(path, data.get("max_bundle_mb", DEFAULT_MAX_BUNDLE_MB)),
                   requirements=requirements_of(root, data.get("dependencies", [])), python=python)


def requirements_of(root: Path, listed: Any) -> tuple[str, ...]:
    """torpor.toml's ``dependencies`` and requirements.txt's lines, in that order, without repeats."""
    where = root / MANIFEST
    if not isinstance(listed, list) or not all(isinstance(d, str) and d.strip() for d in listed):
        raise ConfigError(f"{where}: 'dependencies' must be a list of requirements, e.g. dependencies = "
                          f"[\"numpy>=1.26\", \"httpx\"] (got {listed!r})")
    out = [d.strip() for d in listed]
    req = root / REQUIREMENTS
    if req.is_file():
        for n, line in enumerate(req.read_text().splitlines(), 1):
            text = line.split(" #", 1)[0].strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith("-"):
                raise ConfigError(f"{req}:{n}: {text!r}: only requirements (name, version, extras, markers) are "
                                  "read here, not pip options; the index is the machine's own configuration")
            out.append(text)
    return tuple(dict.fromkeys(out))


def exclude_patterns(path: Path, value: Any) -> tuple[str, ...]:
    """torpor.toml's ``exclude``, checked: a list of valid gitignore patterns that each match something."""
    example = 'e.g. exclude = ["data/", "*.csv"]'
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{path}: 'exclude' must be a list of gitignore patterns, {example} (got {value!r})")
    import pathspec  # only the CLI loads torpor.toml; task code in containers never needs it

    for pattern in value:
        if "\n" in pattern or "\r" in pattern:
            raise ConfigError(f"{path}: 'exclude' pattern {pattern!r} holds a line break; give one pattern per "
                              f"list item, {example}")
        try:
            spec = pathspec.GitIgnoreSpec.from_lines([pattern])
        except ValueError as exc:
            raise ConfigError(f"{path}: 'exclude' pattern {pattern!r} is not a valid gitignore pattern ({exc}); "
                              f"{example}") from None
        if all(p.include is None for p in spec.patterns):
            raise ConfigError(f"{path}: 'exclude' pattern {pattern!r} matches nothing (empty, a comment, or '/'); "
                              f"{example}")
    return tuple(value)


def _max_bundle_bytes(path: Path, value: Any) -> int:
    what = f"{path}: 'max_bundle_mb' must be a number of megabytes above 0, e.g. max_bundle_mb = 100"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # "not >": NaN too
        raise ConfigError(f"{what} (got {value!r})")
    if value > MAX_BUNDLE_MB:
        raise ConfigError(f"{what} (got {value!r}); {MAX_BUNDLE_MB} is the most: agents and coordinators refuse "
                          f"larger bundles, so keep data out of the bundle with exclude = [\"data/\"] and read it "
                          f"from storage at run time")
    return max(1, int(value * MB))


_DISCOVER = r"""
import importlib, json, sys, traceback
sys.path.insert(0, sys.argv[1])
from torpor.sdk._task import registered_tasks
from torpor._errors import TorporError
for mod in sys.argv[2:]:
    try:
        importlib.import_module(mod)
    except TorporError as exc:
        print(json.dumps({"error": f"{mod}: {exc}"})); sys.exit(0)
    except BaseException as exc:
        tb = traceback.format_exc().strip().splitlines()
        print(json.dumps({"error": f"importing {mod} failed: {type(exc).__name__}: {exc}", "traceback": tb[-12:]}))
        sys.exit(0)
print(json.dumps({"tasks": [t.definition.to_dict() for t in registered_tasks().values()]}))
"""


def discover_tasks(project: Project, *, python: str | None = None, timeout: float = 120,
                   packages: Path | None = None) -> list[dict[str, Any]]:
    """Import the project's modules in a separate process and list the tasks they declare.

    ``packages``: the project's environment, built here, importable during the discovery.
    """
    import os

    env = dict(os.environ)
    if packages is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(packages)) if p)
    proc = subprocess.run(
        [python or sys.executable, "-c", _DISCOVER, str(project.root), *project.modules],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=project.root, env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise ConfigError(f"discovering tasks in {project.root} failed:\n{proc.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        detail = "\n".join(result.get("traceback", []))
        raise ConfigError(f"{result['error']}" + (f"\n{detail}" if detail else ""))
    tasks = result["tasks"]
    if not tasks:
        raise ConfigError(f"no @task found in modules {', '.join(project.modules)} of {project.root}")
    return tasks
