import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    QUEUED: _ClassVar[RunStatus]
    STARTING: _ClassVar[RunStatus]
    RUNNING: _ClassVar[RunStatus]
    SUSPENDING: _ClassVar[RunStatus]
    SUSPENDED: _ClassVar[RunStatus]
    RESTORING: _ClassVar[RunStatus]
    RETRY_WAIT: _ClassVar[RunStatus]
    COMPLETED: _ClassVar[RunStatus]
    FAILED: _ClassVar[RunStatus]
    CANCELED: _ClassVar[RunStatus]
    TIMED_OUT: _ClassVar[RunStatus]
    CRASHED: _ClassVar[RunStatus]
    OUT_OF_MEMORY: _ClassVar[RunStatus]

class CheckpointKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKPOINT_KIND_UNSPECIFIED: _ClassVar[CheckpointKind]
    SUSPEND: _ClassVar[CheckpointKind]
    PERIODIC: _ClassVar[CheckpointKind]
    ON_DEMAND: _ClassVar[CheckpointKind]
RUN_STATUS_UNSPECIFIED: RunStatus
QUEUED: RunStatus
STARTING: RunStatus
RUNNING: RunStatus
SUSPENDING: RunStatus
SUSPENDED: RunStatus
RESTORING: RunStatus
RETRY_WAIT: RunStatus
COMPLETED: RunStatus
FAILED: RunStatus
CANCELED: RunStatus
TIMED_OUT: RunStatus
CRASHED: RunStatus
OUT_OF_MEMORY: RunStatus
CHECKPOINT_KIND_UNSPECIFIED: CheckpointKind
SUSPEND: CheckpointKind
PERIODIC: CheckpointKind
ON_DEMAND: CheckpointKind

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "factor", "min_timeout", "max_timeout", "randomize")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    MIN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RANDOMIZE_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    factor: float
    min_timeout: float
    max_timeout: float
    randomize: bool
    def __init__(self, max_attempts: _Optional[int] = ..., factor: _Optional[float] = ..., min_timeout: _Optional[float] = ..., max_timeout: _Optional[float] = ..., randomize: _Optional[bool] = ...) -> None: ...

class TaskSettings(_message.Message):
    __slots__ = ("id", "module", "function", "retry", "max_duration", "queue", "concurrency_limit", "checkpoint_every", "memory_bytes", "cpus", "pids_limit", "network", "payload_schema_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    module: str
    function: str
    retry: RetryPolicy
    max_duration: float
    queue: str
    concurrency_limit: int
    checkpoint_every: float
    memory_bytes: int
    cpus: float
    pids_limit: int
    network: str
    payload_schema_json: str
    def __init__(self, id: _Optional[str] = ..., module: _Optional[str] = ..., function: _Optional[str] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., max_duration: _Optional[float] = ..., queue: _Optional[str] = ..., concurrency_limit: _Optional[int] = ..., checkpoint_every: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., cpus: _Optional[float] = ..., pids_limit: _Optional[int] = ..., network: _Optional[str] = ..., payload_schema_json: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("id", "kind", "size_bytes", "raw_bytes", "duration_ms", "agent", "location", "generation", "created_at", "key_id", "network")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: CheckpointKind
    size_bytes: int
    raw_bytes: int
    duration_ms: int
    agent: str
    location: str
    generation: int
    created_at: _timestamp_pb2.Timestamp
    key_id: str
    network: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[CheckpointKind, str]] = ..., size_bytes: _Optional[int] = ..., raw_bytes: _Optional[int] = ..., duration_ms: _Optional[int] = ..., agent: _Optional[str] = ..., location: _Optional[str] = ..., generation: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ..., network: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("time", "type", "detail", "agent", "attempt")
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    type: str
    detail: str
    agent: str
    attempt: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[str] = ..., detail: _Optional[str] = ..., agent: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "status", "error", "traceback", "agent", "started_at", "finished_at", "log_bytes", "log_dropped_bytes")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOG_DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    number: int
    status: RunStatus
    error: str
    traceback: str
    agent: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    log_bytes: int
    log_dropped_bytes: int
    def __init__(self, number: _Optional[int] = ..., status: _Optional[_Union[RunStatus, str]] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., agent: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., log_bytes: _Optional[int] = ..., log_dropped_bytes: _Optional[int] = ...) -> None: ...

class LimitExceeded(_message.Message):
    __slots__ = ("what", "limit", "actual", "setting")
    WHAT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    SETTING_FIELD_NUMBER: _ClassVar[int]
    what: str
    limit: int
    actual: int
    setting: str
    def __init__(self, what: _Optional[str] = ..., limit: _Optional[int] = ..., actual: _Optional[int] = ..., setting: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "task", "version", "status", "attempt", "payload_json", "output_json", "error", "traceback", "tags", "queue", "concurrency_key", "idempotency_key", "parent_run_id", "agent", "generation", "created_at", "started_at", "finished_at", "checkpoints", "events", "attempts", "metadata_json", "waiting", "unplaced")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: str
    version: str
    status: RunStatus
    attempt: int
    payload_json: str
    output_json: str
    error: str
    traceback: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    queue: str
    concurrency_key: str
    idempotency_key: str
    parent_run_id: str
    agent: str
    generation: int
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    events: _containers.RepeatedCompositeFieldContainer[RunEvent]
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    metadata_json: str
    waiting: RunWait
    unplaced: str
    def __init__(self, id: _Optional[str] = ..., task: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., attempt: _Optional[int] = ..., payload_json: _Optional[str] = ..., output_json: _Optional[str] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., queue: _Optional[str] = ..., concurrency_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., agent: _Optional[str] = ..., generation: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[RunEvent, _Mapping]]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., metadata_json: _Optional[str] = ..., waiting: _Optional[_Union[RunWait, _Mapping]] = ..., unplaced: _Optional[str] = ...) -> None: ...

class RunWait(_message.Message):
    __slots__ = ("wait_id", "kind", "due_at", "token_id", "child_run_ids", "since")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    kind: str
    due_at: _timestamp_pb2.Timestamp
    token_id: str
    child_run_ids: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    def __init__(self, wait_id: _Optional[str] = ..., kind: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token_id: _Optional[str] = ..., child_run_ids: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HostFacts(_message.Message):
    __slots__ = ("hostname", "kernel", "cpus", "memory_bytes", "memory_available_bytes", "criu_version", "runc_version", "load_1m", "allow_host_network", "network", "memory_offered_bytes", "python_version")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CRIU_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNC_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    ALLOW_HOST_NETWORK_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    MEMORY_OFFERED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    kernel: str
    cpus: int
    memory_bytes: int
    memory_available_bytes: int
    criu_version: str
    runc_version: str
    load_1m: float
    allow_host_network: bool
    network: str
    memory_offered_bytes: int
    python_version: str
    def __init__(self, hostname: _Optional[str] = ..., kernel: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., criu_version: _Optional[str] = ..., runc_version: _Optional[str] = ..., load_1m: _Optional[float] = ..., allow_host_network: _Optional[bool] = ..., network: _Optional[str] = ..., memory_offered_bytes: _Optional[int] = ..., python_version: _Optional[str] = ...) -> None: ...
