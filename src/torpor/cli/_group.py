"""The root click group. Each command module attaches its verbs to ``cli``."""

from __future__ import annotations

import logging
import sys

import click

from torpor._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="torpor")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """torpor: durable Python tasks that sleep as CRIU snapshots instead of holding compute.

    \b
    Start here:
      torpor doctor            check this host can run torpor
      torpor dev               the whole stack on this machine
      torpor deploy DIR        package and register a project's tasks
      torpor trigger TASK      start a run
      torpor runs show RUN     what a run did, step by step
    """
    from torpor._logging import setup_logging

    setup_logging(level=logging.WARNING - 10 * verbose, json_logs=not sys.stderr.isatty())
