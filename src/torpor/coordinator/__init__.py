"""The coordinator: gRPC API and agent channel over Postgres.

Owns the run state machine, scheduling, retries, timers, waitpoints,
idempotency keys, queues and concurrency limits, and agent leases. Any number
of coordinators may share one database.
"""

from torpor.coordinator._auth import create_key, hash_secret, list_keys, revoke_key
from torpor.coordinator._config import CoordinatorConfig, Limits, TLSConfig
from torpor.coordinator._db import Database, DatabaseError
from torpor.coordinator._migrate import latest_version, migrate, schema_version
from torpor.coordinator._server import Coordinator
from torpor.coordinator._states import ALLOWED, TERMINAL, TransitionError
from torpor.coordinator._triggers import retry_delay

__all__ = [
    "ALLOWED",
    "Coordinator",
    "CoordinatorConfig",
    "Database",
    "DatabaseError",
    "Limits",
    "TERMINAL",
    "TLSConfig",
    "TransitionError",
    "create_key",
    "hash_secret",
    "latest_version",
    "list_keys",
    "migrate",
    "retry_delay",
    "revoke_key",
    "schema_version",
]
