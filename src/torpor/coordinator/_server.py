"""One coordinator process: the gRPC server and its threads, over one database."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from concurrent import futures
from typing import Any

import grpc

from torpor._errors import ConfigError
from torpor._proto.v1 import agent_pb2_grpc, coordinator_pb2_grpc
from torpor._seal import Keyring
from torpor.coordinator._agents import AgentChannelServicer, Sessions
from torpor.coordinator._api import CoordinatorServicer
from torpor.coordinator._auth import AuthInterceptor, KeyChecker
from torpor.coordinator._config import CoordinatorConfig
from torpor.coordinator._db import Database
from torpor.coordinator._hub import Hub
from torpor.coordinator._migrate import migrate
from torpor.coordinator._outbox import Deliverer
from torpor.coordinator._scheduler import Scheduler
from torpor.coordinator._snapshot_keys import load_keyring
from torpor.coordinator._timers import Timers

log = logging.getLogger(__name__)


class Coordinator:
    """Start with ``start()``, stop with ``stop()``; ``port`` is the bound port.

    ``store`` (a ``torpor.store.Store``) is where released snapshots are deleted;
    without one they are only marked released.
    """

    def __init__(self, config: CoordinatorConfig, *, store: Any | None = None) -> None:
        self.config = config
        self.id = config.coordinator_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.store = store
        self.port = 0
        self.db = Database(config.db_url, pool_size=config.db_pool_size)
        self.sessions = Sessions()
        self.snapshot_keys: Keyring | None = None  # loaded at start
        self.scheduler = Scheduler(self.db, self.id, self.sessions.send, poll=config.schedule_poll_seconds,
                                   log_budget=config.log_budget_bytes, keys=lambda: self.snapshot_keys)
        self.deliverer = Deliverer(self.db, self.sessions.is_local, self.sessions.send, self.sessions.sent_cmds)
        self.hub = Hub(config.db_url, on_wake=self.scheduler.wake, on_command=self.deliverer.kick)
        self.timers = Timers(self.db, tick=config.tick_seconds, max_failures=config.max_host_failures, store=store,
                             kick_local=self._kick_local, janitor_every=config.janitor_seconds,
                             lease=config.lease_seconds, heartbeat=config.heartbeat_seconds,
                             orphan_sweep=config.orphan_sweep_seconds, orphan_grace=config.orphan_grace_seconds)
        self._server: grpc.Server | None = None

    def _kick_local(self) -> None:
        for name in self.sessions.names():
            self.deliverer.kick(name)

    def start(self) -> "Coordinator":
        if self.config.migrate:
            before, after = migrate(self.config.db_url)
            if before != after:
                log.info("database schema migrated from version %d to %d", before, after)
        self.db.open()
        self.snapshot_keys = load_keyring(self.db, key=self.config.snapshot_key, old=self.config.old_snapshot_keys)
        interceptors = []
        checker = None
        if self.config.auth:
            checker = KeyChecker(self.db, api_keys=self.config.api_keys, join_tokens=self.config.join_tokens,
                                 ttl=self.config.auth_cache_seconds)
            interceptors.append(AuthInterceptor(checker))
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.config.grpc_workers, thread_name_prefix="torpor-rpc"),
                             interceptors=interceptors, options=options)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
            CoordinatorServicer(self.db, self.config, self.hub, store=self.store, checker=checker,
                                keys=lambda: self.snapshot_keys), server)
        agent_pb2_grpc.add_AgentChannelServicer_to_server(
            AgentChannelServicer(self.db, self.config, self.id, self.sessions, self.deliverer.kick, self.scheduler.wake,
                                 checker=checker, snapshot_keys=self.snapshot_keys),
            server)
        if self.config.tls is not None:
            try:
                with open(self.config.tls.cert_file, "rb") as f:
                    cert = f.read()
                with open(self.config.tls.key_file, "rb") as f:
                    key = f.read()
            except OSError as exc:
                raise ConfigError(f"cannot read the TLS certificate or key: {exc}") from exc
            self.port = server.add_secure_port(self.config.listen, grpc.ssl_server_credentials([(key, cert)]))
        else:
            self.port = server.add_insecure_port(self.config.listen)
        if not self.port:
            raise ConfigError(f"cannot listen on {self.config.listen}: the address is in use or invalid")
        self.hub.start()
        self.deliverer.start()
        self.scheduler.start()
        self.timers.start()
        server.start()
        self._server = server
        log.info("coordinator %s listening on %s (port %d)", self.id, self.config.listen, self.port)
        return self

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    def stop(self, grace: float = 1.0) -> None:
        self.sessions.close_all()
        if self._server is not None:
            self._server.stop(grace).wait()
        self.timers.stop()
        self.scheduler.stop()
        self.deliverer.stop()
        self.hub.stop()
        self.db.close()

    def __enter__(self) -> "Coordinator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
