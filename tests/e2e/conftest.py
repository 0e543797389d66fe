"""Fixtures for the end-to-end tests; the stack itself is in e2e_support.py."""

from e2e_support import stack, work  # noqa: F401  (fixtures)
