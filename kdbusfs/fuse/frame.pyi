# The interface of frame.pyx (compiled), for type checkers.

class ProtocolError(Exception): ...

class Header:
    length: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    def __init__(self, length: int, opcode: int, unique: int, nodeid: int, uid: int, gid: int,
                 pid: int) -> None: ...

class Request:
    header: Header
    body: memoryview
    opcode: int
    unique: int
    def __init__(self, header: Header, body: memoryview) -> None: ...

def parse_request(buf: bytes | bytearray | memoryview) -> Request: ...
def reply(unique: int, payload: bytes | bytearray | memoryview = b"") -> bytes: ...
def reply_error(unique: int, err: int) -> bytes: ...
def notification(code: int, payload: bytes | bytearray | memoryview) -> bytes: ...
def ioctl_in(body: bytes | bytearray | memoryview) -> tuple[int, int, int, int, bytes]: ...
