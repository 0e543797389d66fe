"""Shared fixtures. The helpers live in helpers.py (``from helpers import need``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import IN_CI, assert_eventually, free_port, need, need_root  # noqa: E402,F401

pytest_plugins = ["fixtures.postgres", "fixtures.minio"]
