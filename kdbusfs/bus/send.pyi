# The interface of send.pyx (compiled), for type checkers.
from ..abi import structs
from ..abi.walk import ItemSpec
from .args import Args
from .command import Caller, Pending
from .connection import Connection
from .message import Staged
from .metadata import Process

# The item types a message may carry, as a negotiating SEND reports them.
MSG_NEGOTIABLE: dict[int, ItemSpec]

def cmd_send(conn: Connection, args: Args[structs.CmdSend], caller: Caller) -> Pending | None: ...
def negotiate_send(conn: Connection, args: Args[structs.CmdSend], caller: Caller) -> None:
    """A negotiating SEND also negotiates the message it points to, if any."""
def broadcast(src: Connection, msg: Staged, process: Process | None) -> None:
    """Offer a broadcast from `src` to every connection whose matches select it, the sender
    included (kdbus_bus_broadcast)."""
