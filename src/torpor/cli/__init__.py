"""The ``torpor`` command line. The only layer that reads environment variables."""

from __future__ import annotations

import sys

from torpor.cli._group import cli

# Each module attaches its commands to ``cli`` when imported.
from torpor.cli import _doctor  # noqa: E402,F401
from torpor.cli import _api  # noqa: E402,F401  (trigger, runs, tokens, agents)
from torpor.cli import _server  # noqa: E402,F401  (coordinator, migrate)
from torpor.cli import _agent  # noqa: E402,F401  (agent)
from torpor.cli import _dev  # noqa: E402,F401  (dev)
from torpor.cli import _deploy  # noqa: E402,F401  (deploy)
from torpor.cli import _service  # noqa: E402,F401  (install-service)
from torpor.cli import _snapshots  # noqa: E402,F401  (snapshots)
from torpor.cli import _env  # noqa: E402,F401  (env)


def main() -> None:
    cli(prog_name="torpor")


__all__ = ["cli", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
