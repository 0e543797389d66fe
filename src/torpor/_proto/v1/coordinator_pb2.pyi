import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from torpor._proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Environment(_message.Message):
    __slots__ = ("id", "sha256", "size_bytes", "python", "platform", "requirements", "created_at", "location")
    ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    sha256: str
    size_bytes: int
    python: str
    platform: str
    requirements: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    location: str
    def __init__(self, id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., python: _Optional[str] = ..., platform: _Optional[str] = ..., requirements: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., location: _Optional[str] = ...) -> None: ...

class EnvironmentChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: Environment
    data: bytes
    def __init__(self, header: _Optional[_Union[Environment, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetEnvironmentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("version", "project")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    version: str
    project: str
    def __init__(self, version: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("version", "project", "created_at", "tasks", "environment")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    project: str
    created_at: _timestamp_pb2.Timestamp
    tasks: _containers.RepeatedScalarFieldContainer[str]
    environment: Environment
    def __init__(self, version: _Optional[str] = ..., project: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tasks: _Optional[_Iterable[str]] = ..., environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class EnvVar(_message.Message):
    __slots__ = ("name", "value", "secret", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    secret: bool
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., secret: _Optional[bool] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetEnvRequest(_message.Message):
    __slots__ = ("project", "values", "secret")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    project: str
    values: _containers.ScalarMap[str, str]
    secret: bool
    def __init__(self, project: _Optional[str] = ..., values: _Optional[_Mapping[str, str]] = ..., secret: _Optional[bool] = ...) -> None: ...

class ListEnvRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class UnsetEnvRequest(_message.Message):
    __slots__ = ("project", "names")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    project: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListEnvResponse(_message.Message):
    __slots__ = ("project", "vars")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    project: str
    vars: _containers.RepeatedCompositeFieldContainer[EnvVar]
    def __init__(self, project: _Optional[str] = ..., vars: _Optional[_Iterable[_Union[EnvVar, _Mapping]]] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("project", "version", "bundle_location", "tasks", "bundle", "environment_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    version: str
    bundle_location: str
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskSettings]
    bundle: bytes
    environment_id: str
    def __init__(self, project: _Optional[str] = ..., version: _Optional[str] = ..., bundle_location: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.TaskSettings, _Mapping]]] = ..., bundle: _Optional[bytes] = ..., environment_id: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("version", "created")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    version: str
    created: bool
    def __init__(self, version: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class TriggerOptions(_message.Message):
    __slots__ = ("idempotency_key", "idempotency_key_ttl", "queue", "concurrency_key", "tags", "version", "delay", "parent_run_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_TTL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    idempotency_key_ttl: float
    queue: str
    concurrency_key: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    version: str
    delay: float
    parent_run_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., idempotency_key_ttl: _Optional[float] = ..., queue: _Optional[str] = ..., concurrency_key: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., delay: _Optional[float] = ..., parent_run_id: _Optional[str] = ...) -> None: ...

class TriggerRequest(_message.Message):
    __slots__ = ("task", "payload_json", "options")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    task: str
    payload_json: str
    options: TriggerOptions
    def __init__(self, task: _Optional[str] = ..., payload_json: _Optional[str] = ..., options: _Optional[_Union[TriggerOptions, _Mapping]] = ...) -> None: ...

class TriggerResponse(_message.Message):
    __slots__ = ("run_id", "existing", "run")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    existing: bool
    run: _common_pb2.Run
    def __init__(self, run_id: _Optional[str] = ..., existing: _Optional[bool] = ..., run: _Optional[_Union[_common_pb2.Run, _Mapping]] = ...) -> None: ...

class BatchTriggerRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[TriggerRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[TriggerRequest, _Mapping]]] = ...) -> None: ...

class BatchTriggerResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[TriggerResponse]
    def __init__(self, runs: _Optional[_Iterable[_Union[TriggerResponse, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("status", "task", "tag", "created_after", "created_before", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: _containers.RepeatedScalarFieldContainer[_common_pb2.RunStatus]
    task: str
    tag: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Iterable[_Union[_common_pb2.RunStatus, str]]] = ..., task: _Optional[str] = ..., tag: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[_common_pb2.Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ReplayRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CheckpointRunRequest(_message.Message):
    __slots__ = ("run_id", "wait")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    wait: bool
    def __init__(self, run_id: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class CheckpointRunResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _common_pb2.Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ...) -> None: ...

class CompleteTokenRequest(_message.Message):
    __slots__ = ("token_id", "data_json")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    data_json: str
    def __init__(self, token_id: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class CompleteTokenResponse(_message.Message):
    __slots__ = ("completed", "run_id")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    completed: bool
    run_id: str
    def __init__(self, completed: _Optional[bool] = ..., run_id: _Optional[str] = ...) -> None: ...

class WakeRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("run_id", "follow")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    follow: bool
    def __init__(self, run_id: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("run_id", "stream", "data", "time", "attempt")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stream: str
    data: bytes
    time: _timestamp_pb2.Timestamp
    attempt: int
    def __init__(self, run_id: _Optional[str] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "facts", "slots", "slots_used", "labels", "lease_expires_at", "alive", "connected_at")
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
    SLOTS_USED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    facts: _common_pb2.HostFacts
    slots: int
    slots_used: int
    labels: _containers.ScalarMap[str, str]
    lease_expires_at: _timestamp_pb2.Timestamp
    alive: bool
    connected_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ..., slots: _Optional[int] = ..., slots_used: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., alive: _Optional[bool] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...
