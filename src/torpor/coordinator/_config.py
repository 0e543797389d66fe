"""Coordinator settings: frozen, keyword-only; the CLI builds them from flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from torpor._seal import Kek


@dataclass(frozen=True, kw_only=True)
class TLSConfig:
    """A certificate and key the coordinator serves TLS with."""

    cert_file: str
    """PEM certificate chain presented to clients and agents."""
    key_file: str
    """PEM private key of that certificate."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What a trigger may carry; anything over is INVALID_ARGUMENT and nothing is written."""

    max_payload_bytes: int = 3 * 1024 * 1024
    """Largest payload, in bytes of its UTF-8 JSON text (3 MiB)."""
    max_tags: int = 10
    """Most tags on one run."""
    max_tag_chars: int = 128
    """Longest tag."""
    max_idempotency_key_chars: int = 2048
    """Longest idempotency key."""
    max_batch_items: int = 1000
    """Most items in one BatchTrigger."""
    max_children: int = 10_000
    """Most child runs one run may trigger over its life (all attempts); a trigger past it is refused whole."""
    default_idempotency_ttl: float = 30 * 24 * 3600.0
    """How long an idempotency key keeps matching when the trigger gives no TTL (seconds)."""


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    """Everything one coordinator process needs. Several may share one database."""

    db_url: str
    """libpq connection string or postgresql:// URL of the torpor database."""
    listen: str = "127.0.0.1:7433"
    """host:port the gRPC server binds (port 0 picks a free one)."""
    tls: TLSConfig | None = None
    """Serve TLS with this certificate; None serves plaintext."""
    auth: bool = True
    """Require an API key (clients) or join token (agents). False only for local development."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Extra client API keys accepted besides the ones stored (hashed) in the database."""
    join_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Extra agent join tokens accepted besides the ones stored in the database."""
    auth_cache_seconds: float = 5.0
    """How long a key check is cached; a revoked key stops working within this time."""
    limits: Limits = field(default_factory=Limits)
    """Input limits of Trigger and BatchTrigger."""
    lease_seconds: float = 15.0
    """How long an agent's lease lasts past its last heartbeat; expired means host lost."""
    heartbeat_seconds: float = 5.0
    """How often agents are told to heartbeat."""
    tick_seconds: float = 0.25
    """Period of the timer loop: due retries and waitpoints, leases, max_duration, janitor."""
    janitor_seconds: float = 5.0
    """Period of the janitor: expired idempotency keys, released snapshots deleted from the store."""
    schedule_poll_seconds: float = 0.5
    """Longest the scheduler sleeps when nothing wakes it (delayed runs become due this way)."""
    max_host_failures: int = 5
    """Host failures (lease lost, start/restore refused, kernel kill) one attempt survives before CRASHED."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept per live attempt; older ones are released and the janitor deletes them."""
    orphan_sweep_seconds: float = 600.0
    """Period of the store sweeper, which deletes checkpoint folders no checkpoint row names (an upload
    whose report never landed, a failed dump's log, a deleted run's snapshots); 0 turns it off."""
    orphan_grace_seconds: float = 3600.0
    """Age (of the newest object in it) before an unreferenced checkpoint folder may be swept; must be
    longer than any snapshot upload plus the time its report takes to be recorded (see _sweeper)."""
    db_pool_size: int = 16
    """Most Postgres connections this coordinator holds."""
    grpc_workers: int = 64
    """Threads serving RPCs; every connected agent and open stream holds one."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted (a batch of big payloads must arrive to be judged)."""
    log_budget_bytes: int = 16 * 1024 * 1024
    """Output one attempt of a run may keep in its logs, across all its starts and restores; agents drop the
    rest and leave a marker line with the count (the attempt's ``log_dropped_bytes``)."""
    coordinator_id: str = ""
    """Name of this coordinator in the agents table; empty picks hostname:pid:random."""
    migrate: bool = True
    """Apply pending schema migrations at start."""
    snapshot_key: Kek | None = None
    """The key-encryption key agents seal every snapshot under (``--snapshot-key-file``); None: the one the
    first coordinator generated and kept in Postgres (generated at start if there is none)."""
    old_snapshot_keys: tuple[Kek, ...] = ()
    """Older keys handed to agents to open snapshots sealed before a rotation, never to seal; the Postgres key
    is added to them when ``snapshot_key`` is set."""
