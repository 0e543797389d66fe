"""API keys (clients) and join tokens (agents): bearer secrets, stored as sha256.

A secret looks like ``tpk_<id>_<random>`` (client) or ``tpj_<id>_<random>``
(agent); only its sha256 is stored. Every call to ``torpor.v1.Coordinator``
needs a client key, and the agent channel needs a join token; anything else is
UNAUTHENTICATED before a handler runs.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any, Callable

import grpc

from torpor._errors import ConfigError
from torpor.coordinator._db import Cursor, Database

KINDS = {"client": "tpk", "agent": "tpj"}
_SERVICE_KIND = {"/torpor.v1.Coordinator/": "client", "/torpor.v1.AgentChannel/": "agent"}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(cur: Cursor, kind: str, name: str = "") -> tuple[str, str]:
    """Store a new key of ``kind``; return (id, secret). The secret is not kept and cannot be shown again."""
    if kind not in KINDS:
        raise ConfigError(f"key kind must be one of {', '.join(KINDS)}, not {kind!r}")
    key_id = secrets.token_hex(4)
    secret = f"{KINDS[kind]}_{key_id}_{secrets.token_urlsafe(24)}"
    cur.execute("INSERT INTO api_keys (id, kind, secret_sha256, name) VALUES (%s, %s, %s, %s)",
                (key_id, kind, hash_secret(secret), name))
    return key_id, secret


def list_keys(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute("SELECT id, kind, name, created_at, revoked_at FROM api_keys ORDER BY created_at")
    return cur.fetchall()


def revoke_key(cur: Cursor, key_id: str) -> bool:
    cur.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id", (key_id,))
    return cur.fetchone() is not None


def _lookup(cur: Cursor, digest: str) -> str | None:
    cur.execute("SELECT kind FROM api_keys WHERE secret_sha256 = %s AND revoked_at IS NULL", (digest,))
    row = cur.fetchone()
    return row["kind"] if row else None


class KeyChecker:
    """Answers "is this secret a valid key of this kind", caching answers for a few seconds."""

    def __init__(self, db: Database, *, api_keys: tuple[str, ...] = (), join_tokens: tuple[str, ...] = (), ttl: float = 5.0) -> None:
        self._db = db
        self._static = {hash_secret(k): "client" for k in api_keys} | {hash_secret(k): "agent" for k in join_tokens}
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def kind_of(self, secret: str) -> str | None:
        digest = hash_secret(secret)
        if digest in self._static:
            return self._static[digest]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        kind = self._db.run(_lookup, digest)
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, kind)
        return kind


def bearer(metadata: Any) -> str:
    """The secret of an ``authorization: Bearer ...`` entry of gRPC metadata, or ''."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return ""


class StreamGuard:
    """Whether the key that opened a long stream has since been revoked (checked at most once per ``ttl``).

    The interceptor checks a key when a call starts; a stream (an agent's
    channel, a watch, a log follow) outlives that check, so its loop asks this
    guard and ends the stream once the key is gone. A check that cannot reach
    the database counts as valid: an outage must not cut every stream.
    """

    def __init__(self, checker: "KeyChecker | None", context: grpc.ServicerContext, ttl: float) -> None:
        self._checker = checker
        self._secret = bearer(context.invocation_metadata()) if checker is not None else ""
        self._ttl = ttl
        self._next = time.monotonic() + ttl

    def revoked(self) -> bool:
        if self._checker is None or not self._secret or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self._ttl
        try:
            return self._checker.kind_of(self._secret) is None
        except Exception:  # noqa: BLE001 - see the class docstring
            return False


def _abort_handler(handler: grpc.RpcMethodHandler, message: str,
                   code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, checker: KeyChecker) -> None:
        self._checker = checker

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        need = next((kind for prefix, kind in _SERVICE_KIND.items() if details.method.startswith(prefix)), None)
        if need is None:
            return handler  # health checks and the like
        secret = bearer(details.invocation_metadata)
        what = "an API key" if need == "client" else "a join token"
        if not secret:
            return _abort_handler(handler, f"missing credentials: send {what} as 'authorization: Bearer <secret>' metadata")
        try:
            kind = self._checker.kind_of(secret)
        except Exception as exc:
            return _abort_handler(handler, f"cannot check credentials now: {exc}", grpc.StatusCode.UNAVAILABLE)
        if kind != need:
            return _abort_handler(handler, f"{what} is required; the one presented is unknown, revoked or of the wrong kind")
        return handler
