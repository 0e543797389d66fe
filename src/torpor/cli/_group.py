"""The root click group. Each command module attaches its verbs to ``cli``.

Every error reaches the user as one line on stderr and exit status 1: a
mistake in the input or a problem in the environment is not a crash, so it
never prints a traceback. ``--debug`` (or TORPOR_DEBUG=1) lets the exception
through with its traceback, for bug reports.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from torpor._version import __version__

# What to try next, by gRPC status of a failed call to the coordinator.
_RPC_HINTS = {
    "UNAVAILABLE": "is it running? Start one on this machine with `torpor dev --detach`, or point --address / "
                   "TORPOR_ADDRESS at yours (`set -a; . .torpor/client.env; set +a` after torpor dev)",
    "UNAUTHENTICATED": "give a client API key with --api-key or TORPOR_API_KEY (torpor dev writes one to "
                       ".torpor/client.env: `set -a; . .torpor/client.env; set +a`)",
    "PERMISSION_DENIED": "this key may not do that; create a client key with `torpor keys create`",
}


def describe_error(exc: BaseException) -> str:
    """One line (or a short paragraph) that says what went wrong and what to do."""
    from torpor._errors import RPCError, TorporError

    if isinstance(exc, RPCError):
        hint = _RPC_HINTS.get(exc.code.name)
        return f"{exc.code.name}: {exc.message}" + (f"\n  {hint}" if hint else "")
    if isinstance(exc, TorporError):
        return exc.message
    if isinstance(exc, PermissionError):
        return f"{exc.strerror or exc}: {exc.filename or ''} (run as root, or fix the permissions)".replace(": )", ")")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return (f"internal error: {type(exc).__name__}: {exc}\n"
            "  this is a bug in torpor; run the command again with --debug for the traceback and report it")


class _Root(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (`torpor runs show X | head`): stop quietly, as SIGPIPE would.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # noqa: BLE001 - every error becomes one clear line
            if ctx.params.get("debug"):
                raise
            click.echo(f"Error: {describe_error(exc)}", err=True)
            sys.exit(1)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="torpor")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--debug", is_flag=True, envvar="TORPOR_DEBUG",
              help="Show the full traceback of an error instead of one line (env TORPOR_DEBUG=1).")
def cli(verbose: int, debug: bool) -> None:
    """torpor: durable Python tasks that sleep as CRIU snapshots instead of holding compute.

    \b
    Start here:
      torpor doctor            check this host can run torpor
      torpor dev --detach      the whole stack on this machine, in the background
      torpor deploy DIR        package and register a project's tasks
      torpor trigger TASK      start a run
      torpor runs show RUN     what a run did, step by step
      torpor runs wake RUN     end a run's timed wait now

    Errors print one line; add --debug for the traceback.
    """
    from torpor._logging import setup_logging

    setup_logging(level=logging.DEBUG if debug else logging.WARNING - 10 * verbose, json_logs=not sys.stderr.isatty())
