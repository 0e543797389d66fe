from torpor._proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeRequest(_message.Message):
    __slots__ = ("context", "wait", "wait_result", "trigger", "checkpoint", "metadata", "result", "create_token")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_RESULT_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    context: GetRunContext
    wait: RuntimeWait
    wait_result: RuntimeWaitResult
    trigger: RuntimeTrigger
    checkpoint: RuntimeCheckpoint
    metadata: RuntimeMetadata
    result: RuntimeResult
    create_token: RuntimeCreateToken
    def __init__(self, context: _Optional[_Union[GetRunContext, _Mapping]] = ..., wait: _Optional[_Union[RuntimeWait, _Mapping]] = ..., wait_result: _Optional[_Union[RuntimeWaitResult, _Mapping]] = ..., trigger: _Optional[_Union[RuntimeTrigger, _Mapping]] = ..., checkpoint: _Optional[_Union[RuntimeCheckpoint, _Mapping]] = ..., metadata: _Optional[_Union[RuntimeMetadata, _Mapping]] = ..., result: _Optional[_Union[RuntimeResult, _Mapping]] = ..., create_token: _Optional[_Union[RuntimeCreateToken, _Mapping]] = ...) -> None: ...

class GetRunContext(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunContext(_message.Message):
    __slots__ = ("run_id", "task_id", "attempt", "version", "started_at_unix", "payload_json", "module", "function", "generation")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: str
    attempt: int
    version: str
    started_at_unix: float
    payload_json: str
    module: str
    function: str
    generation: int
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., version: _Optional[str] = ..., started_at_unix: _Optional[float] = ..., payload_json: _Optional[str] = ..., module: _Optional[str] = ..., function: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class RuntimeWait(_message.Message):
    __slots__ = ("wait_id", "until_unix", "token_id", "children", "token_timeout_unix")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TIMEOUT_UNIX_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    until_unix: float
    token_id: str
    children: ChildList
    token_timeout_unix: float
    def __init__(self, wait_id: _Optional[str] = ..., until_unix: _Optional[float] = ..., token_id: _Optional[str] = ..., children: _Optional[_Union[ChildList, _Mapping]] = ..., token_timeout_unix: _Optional[float] = ...) -> None: ...

class ChildList(_message.Message):
    __slots__ = ("run_ids",)
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RuntimeWaitResult(_message.Message):
    __slots__ = ("wait_id",)
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    def __init__(self, wait_id: _Optional[str] = ...) -> None: ...

class RuntimeTrigger(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RuntimeTriggerItem]
    def __init__(self, items: _Optional[_Iterable[_Union[RuntimeTriggerItem, _Mapping]]] = ...) -> None: ...

class RuntimeTriggerItem(_message.Message):
    __slots__ = ("task", "payload_json", "idempotency_key", "tags")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    task: str
    payload_json: str
    idempotency_key: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., payload_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RuntimeCheckpoint(_message.Message):
    __slots__ = ("wait_id", "after_restore")
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_RESTORE_FIELD_NUMBER: _ClassVar[int]
    wait_id: str
    after_restore: bool
    def __init__(self, wait_id: _Optional[str] = ..., after_restore: _Optional[bool] = ...) -> None: ...

class RuntimeMetadata(_message.Message):
    __slots__ = ("metadata_json",)
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    metadata_json: str
    def __init__(self, metadata_json: _Optional[str] = ...) -> None: ...

class RuntimeCreateToken(_message.Message):
    __slots__ = ("timeout_seconds",)
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    timeout_seconds: float
    def __init__(self, timeout_seconds: _Optional[float] = ...) -> None: ...

class RuntimeResult(_message.Message):
    __slots__ = ("ok", "output_json", "error", "traceback", "final")
    OK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    output_json: str
    error: str
    traceback: str
    final: bool
    def __init__(self, ok: _Optional[bool] = ..., output_json: _Optional[str] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class RuntimeResponse(_message.Message):
    __slots__ = ("error", "limit", "context", "wait_accepted", "wait_outcome", "triggered", "ok", "token")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WAIT_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    WAIT_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    error: str
    limit: _common_pb2.LimitExceeded
    context: RunContext
    wait_accepted: WaitAccepted
    wait_outcome: WaitOutcome
    triggered: TriggeredRuns
    ok: Empty
    token: TokenCreated
    def __init__(self, error: _Optional[str] = ..., limit: _Optional[_Union[_common_pb2.LimitExceeded, _Mapping]] = ..., context: _Optional[_Union[RunContext, _Mapping]] = ..., wait_accepted: _Optional[_Union[WaitAccepted, _Mapping]] = ..., wait_outcome: _Optional[_Union[WaitOutcome, _Mapping]] = ..., triggered: _Optional[_Union[TriggeredRuns, _Mapping]] = ..., ok: _Optional[_Union[Empty, _Mapping]] = ..., token: _Optional[_Union[TokenCreated, _Mapping]] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WaitAccepted(_message.Message):
    __slots__ = ("resolved",)
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    resolved: bool
    def __init__(self, resolved: _Optional[bool] = ...) -> None: ...

class WaitOutcome(_message.Message):
    __slots__ = ("ready", "result_json", "timed_out", "unknown")
    READY_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    result_json: str
    timed_out: bool
    unknown: bool
    def __init__(self, ready: _Optional[bool] = ..., result_json: _Optional[str] = ..., timed_out: _Optional[bool] = ..., unknown: _Optional[bool] = ...) -> None: ...

class TriggeredRuns(_message.Message):
    __slots__ = ("run_ids",)
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TokenCreated(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...
