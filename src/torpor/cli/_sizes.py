"""Byte sizes on the command line: ``65536``, ``64KiB``, ``16MiB``, ``1GiB`` (K, M, G are binary too)."""

from __future__ import annotations

import re
from typing import Any

import click

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class ByteSize(click.ParamType):
    """A positive number of bytes, with an optional binary unit."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            n = value
        else:
            m = _SIZE.match(str(value))
            if m is None:
                self.fail(f"{value!r} is not a size: give bytes, or a number with KiB, MiB or GiB (e.g. 64KiB)",
                          param, ctx)
            n = int(m.group(1)) * _UNITS[m.group(2).upper()]
        if n <= 0:
            self.fail(f"{value!r}: the size must be more than 0 bytes", param, ctx)
        return n


BYTES = ByteSize()

