from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CrashRequest(_message.Message):
    __slots__ = ("exit_code",)
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    def __init__(self, exit_code: _Optional[int] = ...) -> None: ...

class CrashReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFaultRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Fault(_message.Message):
    __slots__ = ("added_latency_ms", "error_rate", "error_code", "not_serving")
    ADDED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    NOT_SERVING_FIELD_NUMBER: _ClassVar[int]
    added_latency_ms: int
    error_rate: float
    error_code: int
    not_serving: bool
    def __init__(self, added_latency_ms: _Optional[int] = ..., error_rate: _Optional[float] = ..., error_code: _Optional[int] = ..., not_serving: _Optional[bool] = ...) -> None: ...
