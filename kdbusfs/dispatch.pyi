# The interface of frame.pyx (compiled), for type checkers.
import enum
from collections.abc import Callable, Iterator
from typing import Any

from .abi.constants import Cmd
from .abi.structs import Layout
from .abi.walk import ItemSpec
from .bus.command import Args, Caller, Pending
from .bus.connection import Connection, Kind
from .errors import Refused
from .handle import Handle

class HandleType(enum.Enum):
    NONE = "none"
    BUS_OWNER = "bus owner"
    EP_OWNER = "endpoint owner"
    CONNECTED = "connection"

class Connected:
    """HELLO made `conn` on the handle: the edge sets up what the connection needs of its file."""

    @property
    def conn(self) -> Connection: ...
    @property
    def out(self) -> bytes: ...
    def __init__(self, conn: Connection, out: bytes) -> None: ...

# What a command body returns: a blocked call, the connection HELLO made, or nothing to report.
SetupRunner = Callable[[Handle, Args[Any], Caller], Connection | None]
ConnRunner = Callable[[Connection, Args[Any], Caller], Pending | Refused | None]
Negotiator = Callable[[Connection, Args[Any], Caller], None]

class Command:
    @property
    def cmd(self) -> Cmd: ...
    @property
    def layout(self) -> Layout[Any]: ...
    @property
    def flags(self) -> int: ...
    @property
    def items(self) -> dict[int, ItemSpec]: ...
    @property
    def setup(self) -> SetupRunner | None: ...
    @property
    def setup_on(self) -> type | None: ...
    @property
    def run(self) -> ConnRunner | None: ...
    @property
    def kinds(self) -> tuple[Kind, ...]: ...
    @property
    def owner_of_endpoint(self) -> bool: ...
    @property
    def negotiate(self) -> Negotiator | None: ...
    @property
    def writeback_on_error(self) -> bool: ...
    @property
    def mandatory(self) -> tuple[int, ...]: ...
    @property
    def returns_struct(self) -> bool: ...
    @classmethod
    def of(cls, cmd: Cmd, layout: Layout[Any], flags: int, *specs: ItemSpec,
           setup: SetupRunner | None = None, setup_on: type | None = None, run: ConnRunner | None = None,
           kinds: tuple[Kind, ...] = (), owner_of_endpoint: bool = False,
           negotiate: Negotiator | None = None, writeback_on_error: bool = False) -> Command: ...

class CommandTable:
    def __init__(self, *commands: Command) -> None: ...
    def __getitem__(self, cmd: int) -> Command: ...
    def __contains__(self, cmd: object) -> bool: ...
    def __iter__(self) -> Iterator[int]: ...
    def __len__(self) -> int: ...
    def ioctl(self, handle: Handle, cmd: int, address: int, in_data: bytes,
              caller: Caller) -> bytes | Pending | Connected:
        """Run one kdbus ioctl; returns the ioctl's out data, Pending for a blocked call, or
        Connected (with the out data) when HELLO has made a connection on the handle. Every
        failure raises KdbusError."""
    def attempt(self, handle: Handle, cmd: int, address: int, in_data: bytes,
                caller: Caller) -> bytes | Pending | Connected | Refused:
        """ioctl(), except that a failure a body returns as Refused (an empty RECV) is returned."""
