"""Fixtures for the end-to-end tests; the stack itself is in e2e_support.py."""

from e2e_support import stack  # noqa: F401  (module-scoped fixture)
