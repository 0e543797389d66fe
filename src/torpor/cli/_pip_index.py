"""The machine's package index, as pip is configured, handed to uv.

uv reads its own settings (``UV_*`` variables, uv.toml) and not pip's: on a
machine whose package mirror is configured for pip only (/etc/pip.conf,
~/.config/pip/pip.conf, ``PIP_INDEX_URL``...), uv would go to its default
index instead. So ``torpor deploy`` asks pip for its configuration
(``pip config list``, at run time: no index is written into torpor) and
passes what uv has an equivalent for. Whatever is set for uv itself wins.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

# pip's setting -> (uv's variable, how several values are joined). Settings uv has no equivalent for are left.
_TO_UV = {
    "index-url": ("UV_DEFAULT_INDEX", None),
    "extra-index-url": ("UV_INDEX", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "trusted-host": ("UV_INSECURE_HOST", " "),
    "cert": ("SSL_CERT_FILE", None),
    "timeout": ("UV_HTTP_TIMEOUT", None),
    "default-timeout": ("UV_HTTP_TIMEOUT", None),
}
_NOT_INDEX = ("SSL_CERT_FILE", "UV_HTTP_TIMEOUT")
# What already names an index for uv: then pip's index settings are not used.
_UV_INDEX_VARS = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                  "UV_NO_INDEX")
# ``pip config list`` shows the files' settings already merged (global, then user, then site), as
# ``section.key``; its environment variables as ``:env:.key``, which win. [install] is more specific
# than [global]; other commands' sections are not install's.
_RANK = {"global": 0, "install": 1, ":env:": 2}


def parse_pip_config(lines: Iterable[str]) -> dict[str, str]:
    """pip's effective settings from the lines of ``pip config list`` (``global.index-url='...'``)."""
    ranked: dict[str, tuple[int, str]] = {}
    for line in lines:
        name, sep, raw = line.strip().partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in _RANK:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        if isinstance(value, str) and (key not in ranked or _RANK[section] >= ranked[key][0]):
            ranked[key] = (_RANK[section], value)
    return {k: v for k, (_, v) in ranked.items()}


def uv_env_from_pip(pip: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to uv's environment so it uses the index pip is configured with."""
    out: dict[str, str] = {}
    index_set_for_uv = any(environ.get(v) for v in _UV_INDEX_VARS)
    for key, (var, joiner) in _TO_UV.items():
        value = pip.get(key, "").strip()
        if not value or environ.get(var):
            continue
        if var not in _NOT_INDEX and index_set_for_uv:
            continue
        parts = value.split()  # pip takes several values on separate lines or separated by spaces
        if var == "UV_FIND_LINKS":  # pip skips a local directory that is not there; uv would fail on it
            parts = [p for p in parts if "://" in p or os.path.exists(p)]
            if not parts:
                continue
        out[var] = joiner.join(parts) if joiner else parts[0]
    return out


def pip_config_lines(python: str | None = None) -> list[str]:
    """``pip config list`` of this interpreter's pip; nothing if it has none."""
    try:
        proc = subprocess.run([python or sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def uv_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus what uv needs to use the package index pip is configured with."""
    return {**environ, **uv_env_from_pip(parse_pip_config(pip_config_lines()), environ)}
