# The interface of device.pyx (compiled), for type checkers.
from ..bus.message import Buffer

def read_into(fd: int, buffer: Buffer) -> int:
    """One read of `fd` into `buffer`; the bytes read. Failures raise OSError as os.read does."""
def write_bytes(fd: int, message: bytes) -> int:
    """Write one whole message; 0, or the errno it failed with."""
