"""Revoking a key also ends the streams it opened: an agent's channel, a watch, a log follow."""

from __future__ import annotations

import threading

import grpc

from coord_support import FakeAgent, deploy, start_coordinator, task  # noqa: F401
from helpers import assert_eventually
from torpor._errors import ErrorCode, RPCError
from torpor.client import Client
from torpor.coordinator import Database, create_key, revoke_key


def test_revoked_keys_close_the_streams_they_opened(start_coordinator, postgres_url):
    coord = start_coordinator(auth_cache_seconds=0.2)
    address = f"127.0.0.1:{coord.port}"
    db = Database(postgres_url, pool_size=1)
    db.open()
    agent = None
    try:
        join_id, join = db.run(create_key, "agent", "soon revoked")
        key_id, key = db.run(create_key, "client", "soon revoked")
        agent = FakeAgent(address, "revoked-host", token=join).connect()
        assert agent.registered.wait(5)
        with Client(address, api_key=key) as c:
            deploy(c, task("watched"))
            run_id = c.trigger("watched").run_id
            errors: dict[str, RPCError] = {}

            def follow(name: str, stream) -> None:  # type: ignore[no-untyped-def]
                try:
                    for _ in stream:
                        pass
                except RPCError as exc:
                    errors[name] = exc

            threads = [threading.Thread(target=follow, args=("watch", c.watch_run(run_id, timeout=60))),
                       threading.Thread(target=follow, args=("logs", c.stream_logs(run_id, follow=True, timeout=60)))]
            for t in threads:
                t.start()
            db.run(revoke_key, join_id)
            db.run(revoke_key, key_id)
            assert_eventually(lambda: agent.error is not None, 10)
            assert agent.error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in agent.error.details()
            for t in threads:
                t.join(timeout=10)
            assert sorted(errors) == ["logs", "watch"], errors
            assert all(e.code == ErrorCode.UNAUTHENTICATED and "revoked" in e.message for e in errors.values())
    finally:
        if agent is not None:
            agent.close()
        db.close()
