from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServedBy(_message.Message):
    __slots__ = ("pod_name", "pod_ip")
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    POD_IP_FIELD_NUMBER: _ClassVar[int]
    pod_name: str
    pod_ip: str
    def __init__(self, pod_name: _Optional[str] = ..., pod_ip: _Optional[str] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("message", "served_by")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    message: str
    served_by: ServedBy
    def __init__(self, message: _Optional[str] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("user_id", "display_name", "served_by")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    served_by: ServedBy
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ...) -> None: ...
