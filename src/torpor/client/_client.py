"""``Client``: the coordinator's public API over gRPC, for applications and the CLI."""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import grpc

from torpor._errors import ConfigError, ErrorCode, RPCError
from torpor._proto.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:7433"
TERMINAL = frozenset({common_pb2.COMPLETED, common_pb2.FAILED, common_pb2.CANCELED, common_pb2.TIMED_OUT,
                      common_pb2.CRASHED, common_pb2.OUT_OF_MEMORY})


@dataclass(frozen=True, kw_only=True)
class ClientTLS:
    """How to verify the coordinator's TLS certificate."""

    ca_file: str | None = None
    """PEM file of the CA (or the self-signed certificate) to trust; None uses the system roots."""
    server_name: str | None = None
    """Name to check the certificate against when it differs from the address's host."""


def _rpc_error(exc: grpc.RpcError, address: str = "") -> RPCError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and address:
        details = f"cannot reach the coordinator at {address} ({details})"
    err = RPCError(details or code.name, code=ErrorCode.from_grpc(code))
    err.grpc_status = code  # type: ignore[attr-defined]
    return err


def _mapped(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, getattr(args[0], "address", "") if args else "") from None
    return call


def _stream(it: Iterator[T], address: str = "") -> Iterator[T]:
    try:
        yield from it
    except grpc.RpcError as exc:
        raise _rpc_error(exc, address) from None


def _ts(value: dt.datetime | None) -> Any:
    if value is None:
        return None
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    return out


def trigger_request(task: str, payload: Any = None, *, payload_json: str | None = None, idempotency_key: str = "",
                    idempotency_key_ttl: float = 0.0, queue: str = "", concurrency_key: str = "",
                    tags: Iterable[str] = (), version: str = "", delay: float = 0.0,
                    parent_run_id: str = "") -> coordinator_pb2.TriggerRequest:
    """A TriggerRequest; ``payload`` is JSON-encoded unless ``payload_json`` gives the text itself."""
    text = payload_json if payload_json is not None else json.dumps(payload)
    return coordinator_pb2.TriggerRequest(
        task=task, payload_json=text,
        options=coordinator_pb2.TriggerOptions(
            idempotency_key=idempotency_key, idempotency_key_ttl=idempotency_key_ttl, queue=queue,
            concurrency_key=concurrency_key, tags=list(tags), version=version, delay=delay,
            parent_run_id=parent_run_id))


class Client:
    """Talks to a coordinator. Every failure is an ``RPCError`` whose ``code`` is the gRPC status.

    ``tls`` is False (plaintext), True (system roots) or a ``ClientTLS``.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, api_key: str | None = None, tls: bool | ClientTLS = False,
                 timeout: float | None = 30.0, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.address = address
        self.timeout = timeout
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        if tls:
            settings = tls if isinstance(tls, ClientTLS) else ClientTLS()
            roots = None
            if settings.ca_file:
                try:
                    with open(settings.ca_file, "rb") as f:
                        roots = f.read()
                except OSError as exc:
                    raise ConfigError(f"cannot read the CA file {settings.ca_file}: {exc}") from exc
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return getattr(self._stub, method)(request, metadata=self._metadata, timeout=timeout or self.timeout)

    @_mapped
    def deploy(self, version: str, tasks: Iterable[common_pb2.TaskSettings], *, project: str = "",
               bundle_location: str = "", bundle: bytes = b"", environment_id: str = "") -> coordinator_pb2.DeployResponse:
        """Register a version; with ``bundle`` the coordinator also stores the code."""
        return self._call("Deploy", coordinator_pb2.DeployRequest(project=project, version=version,
                                                                  bundle_location=bundle_location, tasks=list(tasks),
                                                                  bundle=bundle, environment_id=environment_id))

    @_mapped
    def trigger(self, task: str, payload: Any = None, **options: Any) -> coordinator_pb2.TriggerResponse:
        """Start a run of ``task``; options as in ``trigger_request``."""
        return self._call("Trigger", trigger_request(task, payload, **options))

    @_mapped
    def batch_trigger(self, items: Iterable[coordinator_pb2.TriggerRequest]) -> list[coordinator_pb2.TriggerResponse]:
        return list(self._call("BatchTrigger", coordinator_pb2.BatchTriggerRequest(items=list(items))).runs)

    @_mapped
    def get_run(self, run_id: str) -> common_pb2.Run:
        return self._call("GetRun", coordinator_pb2.GetRunRequest(run_id=run_id))

    @_mapped
    def list_runs(self, *, status: Iterable[int | str] = (), task: str = "", tag: str = "",
                  created_after: dt.datetime | None = None, created_before: dt.datetime | None = None,
                  page_size: int = 50, page_token: str = "") -> coordinator_pb2.ListRunsResponse:
        statuses = [common_pb2.RunStatus.Value(s.upper()) if isinstance(s, str) else s for s in status]
        return self._call("ListRuns", coordinator_pb2.ListRunsRequest(
            status=statuses, task=task, tag=tag, created_after=_ts(created_after), created_before=_ts(created_before),
            page_size=page_size, page_token=page_token))

    @_mapped
    def cancel_run(self, run_id: str) -> common_pb2.Run:
        return self._call("CancelRun", coordinator_pb2.CancelRunRequest(run_id=run_id))

    @_mapped
    def replay_run(self, run_id: str) -> coordinator_pb2.TriggerResponse:
        return self._call("ReplayRun", coordinator_pb2.ReplayRunRequest(run_id=run_id))

    @_mapped
    def checkpoint_run(self, run_id: str, *, wait: bool = False, timeout: float | None = None) -> common_pb2.Checkpoint | None:
        resp = self._call("CheckpointRun", coordinator_pb2.CheckpointRunRequest(run_id=run_id, wait=wait),
                          timeout=timeout or (300.0 if wait else None))
        return resp.checkpoint if resp.HasField("checkpoint") else None

    @_mapped
    def complete_token(self, token_id: str, data: Any = None, *, data_json: str | None = None) -> coordinator_pb2.CompleteTokenResponse:
        text = data_json if data_json is not None else json.dumps(data)
        return self._call("CompleteToken", coordinator_pb2.CompleteTokenRequest(token_id=token_id, data_json=text))

    @_mapped
    def wake_run(self, run_id: str) -> common_pb2.Run:
        """End the run's current time wait now, as if its time had come. Token and children waits are refused."""
        return self._call("WakeRun", coordinator_pb2.WakeRunRequest(run_id=run_id))

    def watch_run(self, run_id: str, *, timeout: float | None = None) -> Iterator[common_pb2.Run]:
        """The run now, then each time it changes, until it finishes."""
        return _stream(self._stub.WatchRun(coordinator_pb2.WatchRunRequest(run_id=run_id), metadata=self._metadata,
                                           timeout=timeout), self.address)

    def wait_for_run(self, run_id: str, *, timeout: float | None = None) -> common_pb2.Run:
        """Block until the run is finished; return it."""
        last = None
        for run in self.watch_run(run_id, timeout=timeout):
            last = run
            if run.status in TERMINAL:
                return run
        if last is None:
            raise RPCError(f"run {run_id} stream ended with no state", code=ErrorCode.UNAVAILABLE)
        return self.get_run(run_id) if last.status not in TERMINAL else last

    def stream_logs(self, run_id: str, *, follow: bool = False, timeout: float | None = None) -> Iterator[coordinator_pb2.LogChunk]:
        return _stream(self._stub.StreamLogs(coordinator_pb2.StreamLogsRequest(run_id=run_id, follow=follow),
                                             metadata=self._metadata, timeout=timeout), self.address)

    @_mapped
    def list_agents(self) -> list[coordinator_pb2.AgentInfo]:
        return list(self._call("ListAgents", coordinator_pb2.ListAgentsRequest()).agents)

    @_mapped
    def put_environment(self, chunks: Iterable[coordinator_pb2.EnvironmentChunk]) -> coordinator_pb2.Environment:
        """Upload an environment: a header message, then the archive (cli/_environment.py makes them)."""
        return self._call("PutEnvironment", iter(chunks), timeout=3600)

    @_mapped
    def get_environment(self, env_id: str) -> coordinator_pb2.Environment:
        return self._call("GetEnvironment", coordinator_pb2.GetEnvironmentRequest(id=env_id))

    @_mapped
    def get_deployment(self, version: str = "", project: str = "") -> coordinator_pb2.Deployment:
        return self._call("GetDeployment", coordinator_pb2.GetDeploymentRequest(version=version, project=project))

    @_mapped
    def set_env(self, project: str, values: dict[str, str], *, secret: bool = False) -> coordinator_pb2.ListEnvResponse:
        """Set a project's environment variables (all or none); secrets are sealed and never returned."""
        return self._call("SetEnv", coordinator_pb2.SetEnvRequest(project=project, values=values, secret=secret))

    @_mapped
    def list_env(self, project: str) -> coordinator_pb2.ListEnvResponse:
        return self._call("ListEnv", coordinator_pb2.ListEnvRequest(project=project))

    @_mapped
    def unset_env(self, project: str, names: list[str]) -> coordinator_pb2.ListEnvResponse:
        return self._call("UnsetEnv", coordinator_pb2.UnsetEnvRequest(project=project, names=names))
