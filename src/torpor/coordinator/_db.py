"""The one place that talks to Postgres through the pool, and retries.

Every unit of work is a function of a cursor, run in one transaction by
``Database.run``. Connection losses, serialization failures and deadlocks are
retried here with jittered exponential backoff, never in scattered ``try``
blocks. Work functions therefore must be safe to run again from the start:
the state machine checks the state it leaves, so a transition that already
committed before a connection broke fails its check instead of applying twice.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from torpor._errors import ErrorCode, TorporError

log = logging.getLogger(__name__)
T = TypeVar("T")

Cursor = psycopg.Cursor[dict[str, Any]]

_RETRYABLE = (
    psycopg.OperationalError,  # connection refused / lost, server shutting down
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    PoolTimeout,
)


class DatabaseError(TorporError):
    """Postgres could not be reached or refused the work after retries."""

    code = ErrorCode.UNAVAILABLE


def backoff_delays(attempts: int, *, base: float = 0.05, cap: float = 2.0) -> list[float]:
    """Full-jitter delays between ``attempts`` tries: random in [0, min(cap, base*2^i))."""
    return [random.uniform(0, min(cap, base * (2**i))) for i in range(max(0, attempts - 1))]


class Database:
    def __init__(self, url: str, *, pool_size: int = 16, name: str = "torpor-coordinator", retries: int = 8) -> None:
        self.url = url
        self.retries = retries
        self.pool = ConnectionPool(
            url,
            min_size=min(2, pool_size),
            max_size=pool_size,
            kwargs={"row_factory": dict_row, "application_name": name, "autocommit": False},
            open=False,
            name=name,
            timeout=30.0,
        )

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``work(cursor, *args, **kwargs)`` in one transaction, retrying transient failures."""
        delays = backoff_delays(self.retries)
        while True:
            try:
                with self.pool.connection() as conn:
                    with conn.transaction():
                        with conn.cursor() as cur:
                            return work(cur, *args, **kwargs)
            except _RETRYABLE as exc:
                if not delays:
                    raise DatabaseError(f"database unavailable after {self.retries} tries: {exc}") from exc
                delay = delays.pop(0)
                log.warning("database: %s; retrying in %.0f ms", type(exc).__name__, delay * 1000)
                time.sleep(delay)


def connect_retrying(url: str, *, attempts: int = 8, **kwargs: Any) -> psycopg.Connection[Any]:
    """A single dedicated connection (LISTEN, migrations), with the same backoff as ``Database.run``."""
    delays = backoff_delays(attempts)
    while True:
        try:
            return psycopg.connect(url, **kwargs)
        except psycopg.OperationalError as exc:
            if not delays:
                raise DatabaseError(f"cannot connect to the database: {exc}") from exc
            time.sleep(delays.pop(0))
