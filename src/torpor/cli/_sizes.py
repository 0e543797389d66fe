"""Byte sizes on the command line: ``65536``, ``64KiB``, ``16MiB``, ``1GiB`` (K, M, G are binary too)."""

from __future__ import annotations

from typing import Any

import click

from torpor._sizes import parse_size


class ByteSize(click.ParamType):
    """A positive number of bytes, with an optional binary unit."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            n = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return n


BYTES = ByteSize()

