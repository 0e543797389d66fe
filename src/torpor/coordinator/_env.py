"""A project's environment variables: set, listed (secrets never shown), unset, and given to its runs.

Secrets are sealed at rest under a key derived from the current snapshot KEK
(torpor/_secretbox.py, purpose "env-at-rest", context "<project>/<name>");
the KEK's id is kept beside each one, so a secret sealed before a key
rotation still opens with the old key (--snapshot-old-key-file). A run gets
the values current at each start; its plain variables travel as they are,
its secrets sealed again for the trip (purpose "env-in-transit", bound to the
run and generation), so that no message carries them in clear. The agent
opens them with the keys it was handed.
"""

from __future__ import annotations

import json
import re

from torpor import _secretbox
from torpor._secretbox import IN_TRANSIT, transit_context
from torpor._errors import ConfigError, NotFoundError
from torpor._proto.v1 import agent_pb2, coordinator_pb2
from torpor._seal import Keyring
from torpor.coordinator._convert import ts
from torpor.coordinator._db import Cursor

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_VALUE_BYTES = 32 << 10
MAX_VARS = 200
# What a project's variables may add up to, as NAME=VALUE strings: the kernel
# refuses to start a process whose environment passes ARG_MAX (2 MiB with an
# 8 MiB stack, arguments included), and every RunSpec carries them all.
MAX_TOTAL_BYTES = 256 << 10
# Set by torpor for every run (agent/_oci.py) and needed by its runtime: a
# project's own value would keep the task's code or torpor's runtime from loading.
RESERVED = {"PYTHONPATH": "it holds the run's code (/app), torpor's runtime and its dependencies (/deps)",
            "PYTHONHOME": "it would point the run's Python away from its standard library"}
AT_REST = "env-at-rest"


def check_project(project: str) -> str:
    if not _PROJECT.match(project or ""):
        raise ConfigError(f"project {project!r}: give the project name of its torpor.toml (letters, digits, '.', "
                          "'_' or '-')")
    return project


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a variable name: use letters, digits and '_', not starting with a "
                          "digit (e.g. API_KEY)")
    if name.upper().startswith("TORPOR_"):
        raise ConfigError(f"{name}: names starting with TORPOR_ are torpor's own; choose another")
    if name in RESERVED:
        raise ConfigError(f"{name}: torpor sets it for every run ({RESERVED[name]}); put modules in the project "
                          "or its dependencies instead")
    return name


def _check_value(name: str, value: str) -> None:
    size = len(value.encode())
    if size > MAX_VALUE_BYTES:
        raise ConfigError(f"{name}: the value is {size:,} bytes; the limit is {MAX_VALUE_BYTES:,} (keep files in "
                          "the store or the project, and their path here)")
    if "\0" in value:
        raise ConfigError(f"{name}: a value cannot hold a NUL byte")


def _entry_bytes(name: str, value: str) -> int:
    return len(name.encode()) + 1 + len(value.encode()) + 1  # NAME=VALUE and its NUL, as exec counts it


def _check_totals(cur: Cursor, project: str, values: dict[str, str]) -> None:
    """How many variables, and how many bytes, the project would have once these are set."""
    # A sealed value is its plaintext, a 12-byte nonce and a 16-byte tag.
    cur.execute("SELECT name, COALESCE(octet_length(value), octet_length(sealed) - 28) AS size FROM project_env"
                " WHERE project = %s AND NOT (name = ANY(%s))", (project, list(values)))
    kept = cur.fetchall()
    if len(kept) + len(values) > MAX_VARS:
        raise ConfigError(f"project {project} would have {len(kept) + len(values)} variables; the limit is "
                          f"{MAX_VARS}: unset some first (torpor env unset NAME)")
    total = sum(len(r["name"].encode()) + 2 + int(r["size"]) for r in kept)
    total += sum(_entry_bytes(n, v) for n, v in values.items())
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(f"project {project}'s variables would take {total:,} bytes; the limit is "
                          f"{MAX_TOTAL_BYTES:,} for all of them: unset some, or keep large values in the store "
                          "or the project and their path here")


def set_vars(cur: Cursor, keyring: Keyring | None, project: str, values: dict[str, str], *, secret: bool) -> None:
    """Set every value or none (all checked before anything is written)."""
    check_project(project)
    if not values:
        raise ConfigError("nothing to set: give NAME=VALUE")
    for name, value in values.items():
        check_name(name)
        _check_value(name, value)
    if secret and keyring is None:
        raise ConfigError("this coordinator has no snapshot key yet, which secrets are sealed under")
    _check_totals(cur, project, values)
    for name, value in values.items():
        if secret:
            assert keyring is not None
            sealed = _secretbox.seal(keyring.current, AT_REST, value.encode(), f"{project}/{name}")
            cur.execute(
                "INSERT INTO project_env (project, name, secret, value, sealed, key_id) VALUES (%s, %s, true, NULL, %s, %s)"
                " ON CONFLICT (project, name) DO UPDATE SET secret = true, value = NULL, sealed = EXCLUDED.sealed,"
                " key_id = EXCLUDED.key_id, updated_at = now()",
                (project, name, sealed, keyring.current.id))
        else:
            cur.execute(
                "INSERT INTO project_env (project, name, secret, value) VALUES (%s, %s, false, %s)"
                " ON CONFLICT (project, name) DO UPDATE SET secret = false, value = EXCLUDED.value, sealed = NULL,"
                " key_id = NULL, updated_at = now()",
                (project, name, value))


def unset(cur: Cursor, project: str, names: list[str]) -> None:
    check_project(project)
    if not names:
        raise ConfigError("nothing to unset: give the names")
    cur.execute("SELECT name FROM project_env WHERE project = %s AND name = ANY(%s)", (project, names))
    found = {r["name"] for r in cur.fetchall()}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFoundError(f"project {project} has no variable {', '.join(missing)} (nothing was unset; "
                            f"torpor env list --project {project} shows what it has)")
    cur.execute("DELETE FROM project_env WHERE project = %s AND name = ANY(%s)", (project, names))


def listing(cur: Cursor, project: str) -> coordinator_pb2.ListEnvResponse:
    check_project(project)
    cur.execute("SELECT name, secret, value, updated_at FROM project_env WHERE project = %s ORDER BY name", (project,))
    return coordinator_pb2.ListEnvResponse(project=project, vars=[
        coordinator_pb2.EnvVar(name=r["name"], secret=r["secret"], value="" if r["secret"] else r["value"],
                               updated_at=ts(r["updated_at"]))
        for r in cur.fetchall()
    ])


def give_to(cur: Cursor, keyring: Keyring | None, spec: agent_pb2.RunSpec, project: str) -> None:
    """Put the project's variables into a run's spec: plain ones as they are, secrets sealed for the trip."""
    cur.execute("SELECT name, secret, value, sealed, key_id FROM project_env WHERE project = %s", (project,))
    secrets: dict[str, str] = {}
    for r in cur.fetchall():
        if not r["secret"]:
            spec.env[r["name"]] = r["value"]
            continue
        kek = keyring.find(r["key_id"]) if keyring is not None else None
        if kek is None:
            raise ConfigError(f"secret {r['name']} of project {project} is sealed under snapshot key {r['key_id']}, "
                              "which this coordinator does not hold (--snapshot-old-key-file); set it again")
        secrets[r["name"]] = _secretbox.open_sealed(kek, AT_REST, bytes(r["sealed"]), f"{project}/{r['name']}").decode()
    if secrets:
        assert keyring is not None
        spec.sealed_env = _secretbox.seal(keyring.current, IN_TRANSIT, json.dumps(secrets).encode(),
                                          transit_context(spec.run.run_id, spec.run.generation))
        spec.env_key_id = keyring.current.id
