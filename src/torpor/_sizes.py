"""Byte sizes as people write them: ``65536``, ``64KiB``, ``16MiB``, ``2GiB``, ``1.5GiB`` (K, M, G, T are binary)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str) -> int:
    """A positive number of bytes; ValueError says what is wrong and how to write it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if m is None:
            raise ValueError(f"{value!r} is not a size: give bytes, or a number with KiB, MiB, GiB or TiB "
                             "(e.g. 512MiB, 2GiB)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f"{value!r}: the size must be more than 0 bytes")
    return n


def format_size(n: int) -> str:
    """``3.0 GiB``, ``512 MiB``, ``64 KiB``, ``100 B``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{n} B"
