from torpor._proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "run_started", "run_exited", "checkpoint_recorded", "log", "wait_requested", "child_trigger", "metadata", "command_failed", "run_resumed", "token_registered", "command_ack", "seq")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    RUN_EXITED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    WAIT_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CHILD_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FAILED_FIELD_NUMBER: _ClassVar[int]
    RUN_RESUMED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ACK_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    run_started: RunStarted
    run_exited: RunExited
    checkpoint_recorded: CheckpointRecorded
    log: LogData
    wait_requested: WaitRequested
    child_trigger: ChildTrigger
    metadata: MetadataUpdate
    command_failed: CommandFailed
    run_resumed: RunResumed
    token_registered: TokenRegistered
    command_ack: CommandAck
    seq: int
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., run_started: _Optional[_Union[RunStarted, _Mapping]] = ..., run_exited: _Optional[_Union[RunExited, _Mapping]] = ..., checkpoint_recorded: _Optional[_Union[CheckpointRecorded, _Mapping]] = ..., log: _Optional[_Union[LogData, _Mapping]] = ..., wait_requested: _Optional[_Union[WaitRequested, _Mapping]] = ..., child_trigger: _Optional[_Union[ChildTrigger, _Mapping]] = ..., metadata: _Optional[_Union[MetadataUpdate, _Mapping]] = ..., command_failed: _Optional[_Union[CommandFailed, _Mapping]] = ..., run_resumed: _Optional[_Union[RunResumed, _Mapping]] = ..., token_registered: _Optional[_Union[TokenRegistered, _Mapping]] = ..., command_ack: _Optional[_Union[CommandAck, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("name", "facts", "slots", "labels", "holding", "incarnation")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    facts: _common_pb2.HostFacts
    slots: int
    labels: _containers.ScalarMap[str, str]
    holding: _containers.RepeatedCompositeFieldContainer[RunRef]
    incarnation: str
    def __init__(self, name: _Optional[str] = ..., facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ..., slots: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., holding: _Optional[_Iterable[_Union[RunRef, _Mapping]]] = ..., incarnation: _Optional[str] = ...) -> None: ...

class RunRef(_message.Message):
    __slots__ = ("run_id", "generation")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    generation: int
    def __init__(self, run_id: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("slots_used", "facts", "holding", "number")
    SLOTS_USED_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    slots_used: int
    facts: _common_pb2.HostFacts
    holding: _containers.RepeatedCompositeFieldContainer[RunRef]
    number: int
    def __init__(self, slots_used: _Optional[int] = ..., facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ..., holding: _Optional[_Iterable[_Union[RunRef, _Mapping]]] = ..., number: _Optional[int] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("run", "restored", "checkpoint_id", "restore_ms")
    RUN_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORE_MS_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    restored: bool
    checkpoint_id: str
    restore_ms: int
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., restored: _Optional[bool] = ..., checkpoint_id: _Optional[str] = ..., restore_ms: _Optional[int] = ...) -> None: ...

class RunExited(_message.Message):
    __slots__ = ("run", "exit_code", "has_result", "output_json", "error", "traceback", "reason", "final")
    RUN_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_RESULT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    exit_code: int
    has_result: bool
    output_json: str
    error: str
    traceback: str
    reason: str
    final: bool
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., exit_code: _Optional[int] = ..., has_result: _Optional[bool] = ..., output_json: _Optional[str] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., reason: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class CheckpointRecorded(_message.Message):
    __slots__ = ("run", "checkpoint", "request_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    checkpoint: _common_pb2.Checkpoint
    request_id: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class LogData(_message.Message):
    __slots__ = ("run", "stream", "data", "attempt", "dropped_bytes")
    RUN_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    stream: str
    data: bytes
    attempt: int
    dropped_bytes: int
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., attempt: _Optional[int] = ..., dropped_bytes: _Optional[int] = ...) -> None: ...

class WaitRequested(_message.Message):
    __slots__ = ("run", "wait_id", "until_unix", "token", "children")
    RUN_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    wait_id: str
    until_unix: float
    token: TokenWait
    children: ChildrenWait
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., wait_id: _Optional[str] = ..., until_unix: _Optional[float] = ..., token: _Optional[_Union[TokenWait, _Mapping]] = ..., children: _Optional[_Union[ChildrenWait, _Mapping]] = ...) -> None: ...

class TokenWait(_message.Message):
    __slots__ = ("token_id", "timeout_unix")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_UNIX_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    timeout_unix: float
    def __init__(self, token_id: _Optional[str] = ..., timeout_unix: _Optional[float] = ...) -> None: ...

class ChildrenWait(_message.Message):
    __slots__ = ("run_ids",)
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ChildTrigger(_message.Message):
    __slots__ = ("run", "request_id", "items")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[TriggerItem]
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TriggerItem, _Mapping]]] = ...) -> None: ...

class TriggerItem(_message.Message):
    __slots__ = ("task", "payload_json", "idempotency_key", "tags", "queue", "concurrency_key")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    task: str
    payload_json: str
    idempotency_key: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    queue: str
    concurrency_key: str
    def __init__(self, task: _Optional[str] = ..., payload_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., queue: _Optional[str] = ..., concurrency_key: _Optional[str] = ...) -> None: ...

class MetadataUpdate(_message.Message):
    __slots__ = ("run", "metadata_json")
    RUN_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    metadata_json: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class RunResumed(_message.Message):
    __slots__ = ("run", "wait_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    wait_id: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., wait_id: _Optional[str] = ...) -> None: ...

class TokenRegistered(_message.Message):
    __slots__ = ("run", "token_id", "timeout_unix")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_UNIX_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    token_id: str
    timeout_unix: float
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., token_id: _Optional[str] = ..., timeout_unix: _Optional[float] = ...) -> None: ...

class CommandFailed(_message.Message):
    __slots__ = ("run", "command", "error", "request_id", "bad_checkpoint_id", "store_unavailable", "snapshot_key_missing", "environment_refused")
    RUN_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BAD_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_KEY_MISSING_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_REFUSED_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    command: str
    error: str
    request_id: str
    bad_checkpoint_id: str
    store_unavailable: bool
    snapshot_key_missing: bool
    environment_refused: bool
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., command: _Optional[str] = ..., error: _Optional[str] = ..., request_id: _Optional[str] = ..., bad_checkpoint_id: _Optional[str] = ..., store_unavailable: _Optional[bool] = ..., snapshot_key_missing: _Optional[bool] = ..., environment_refused: _Optional[bool] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("registered", "start", "restore", "checkpoint", "kill", "wait_resolved", "child_triggered", "suspend", "ack", "heartbeat_ack", "cmd_id")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    WAIT_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    CHILD_TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    CMD_ID_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    start: StartRun
    restore: RestoreRun
    checkpoint: CheckpointCommand
    kill: KillRun
    wait_resolved: WaitResolved
    child_triggered: ChildTriggered
    suspend: SuspendRun
    ack: ReportAck
    heartbeat_ack: HeartbeatAck
    cmd_id: int
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., start: _Optional[_Union[StartRun, _Mapping]] = ..., restore: _Optional[_Union[RestoreRun, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointCommand, _Mapping]] = ..., kill: _Optional[_Union[KillRun, _Mapping]] = ..., wait_resolved: _Optional[_Union[WaitResolved, _Mapping]] = ..., child_triggered: _Optional[_Union[ChildTriggered, _Mapping]] = ..., suspend: _Optional[_Union[SuspendRun, _Mapping]] = ..., ack: _Optional[_Union[ReportAck, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., cmd_id: _Optional[int] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("cmd_ids",)
    CMD_IDS_FIELD_NUMBER: _ClassVar[int]
    cmd_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cmd_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("lease_seconds", "heartbeat_seconds", "fence_seconds", "stale", "snapshot_key", "old_snapshot_keys")
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_KEY_FIELD_NUMBER: _ClassVar[int]
    OLD_SNAPSHOT_KEYS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    heartbeat_seconds: float
    fence_seconds: float
    stale: _containers.RepeatedCompositeFieldContainer[RunRef]
    snapshot_key: SnapshotKey
    old_snapshot_keys: _containers.RepeatedCompositeFieldContainer[SnapshotKey]
    def __init__(self, lease_seconds: _Optional[float] = ..., heartbeat_seconds: _Optional[float] = ..., fence_seconds: _Optional[float] = ..., stale: _Optional[_Iterable[_Union[RunRef, _Mapping]]] = ..., snapshot_key: _Optional[_Union[SnapshotKey, _Mapping]] = ..., old_snapshot_keys: _Optional[_Iterable[_Union[SnapshotKey, _Mapping]]] = ...) -> None: ...

class SnapshotKey(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: bytes
    def __init__(self, id: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("number", "stale")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    number: int
    stale: _containers.RepeatedCompositeFieldContainer[RunRef]
    def __init__(self, number: _Optional[int] = ..., stale: _Optional[_Iterable[_Union[RunRef, _Mapping]]] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("run", "task", "version", "bundle_location", "payload_json", "attempt", "settings", "started_at_unix", "log_budget_bytes", "log_bytes_used", "env", "sealed_env", "env_key_id", "environment_id", "environment_sha256", "environment_python", "environment_location")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LOG_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    SEALED_ENV_FIELD_NUMBER: _ClassVar[int]
    ENV_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_PYTHON_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    task: str
    version: str
    bundle_location: str
    payload_json: str
    attempt: int
    settings: _common_pb2.TaskSettings
    started_at_unix: float
    log_budget_bytes: int
    log_bytes_used: int
    env: _containers.ScalarMap[str, str]
    sealed_env: bytes
    env_key_id: str
    environment_id: str
    environment_sha256: str
    environment_python: str
    environment_location: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., task: _Optional[str] = ..., version: _Optional[str] = ..., bundle_location: _Optional[str] = ..., payload_json: _Optional[str] = ..., attempt: _Optional[int] = ..., settings: _Optional[_Union[_common_pb2.TaskSettings, _Mapping]] = ..., started_at_unix: _Optional[float] = ..., log_budget_bytes: _Optional[int] = ..., log_bytes_used: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., sealed_env: _Optional[bytes] = ..., env_key_id: _Optional[str] = ..., environment_id: _Optional[str] = ..., environment_sha256: _Optional[str] = ..., environment_python: _Optional[str] = ..., environment_location: _Optional[str] = ...) -> None: ...

class StartRun(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ...) -> None: ...

class RestoreRun(_message.Message):
    __slots__ = ("spec", "checkpoint_location", "checkpoint_id", "wake", "checkpoint_key_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    WAKE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    checkpoint_location: str
    checkpoint_id: str
    wake: WaitResolved
    checkpoint_key_id: str
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., checkpoint_location: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., wake: _Optional[_Union[WaitResolved, _Mapping]] = ..., checkpoint_key_id: _Optional[str] = ...) -> None: ...

class CheckpointCommand(_message.Message):
    __slots__ = ("run", "kind", "request_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    kind: _common_pb2.CheckpointKind
    request_id: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., kind: _Optional[_Union[_common_pb2.CheckpointKind, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class WaitResolved(_message.Message):
    __slots__ = ("run", "wait_id", "result_json", "timed_out")
    RUN_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    wait_id: str
    result_json: str
    timed_out: bool
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., wait_id: _Optional[str] = ..., result_json: _Optional[str] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class SuspendRun(_message.Message):
    __slots__ = ("run", "wait_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    wait_id: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., wait_id: _Optional[str] = ...) -> None: ...

class KillRun(_message.Message):
    __slots__ = ("run", "reason")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    reason: str
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ChildTriggered(_message.Message):
    __slots__ = ("run", "request_id", "run_ids", "error", "limit")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    run: RunRef
    request_id: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    error: str
    limit: _common_pb2.LimitExceeded
    def __init__(self, run: _Optional[_Union[RunRef, _Mapping]] = ..., request_id: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., limit: _Optional[_Union[_common_pb2.LimitExceeded, _Mapping]] = ...) -> None: ...
