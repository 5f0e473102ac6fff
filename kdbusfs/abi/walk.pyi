# The interface of walk.pyx (compiled), for type checkers.
from collections.abc import Callable, Mapping

class ItemSpec:
    """An item type a command accepts."""

    @property
    def type(self) -> int: ...
    @property
    def multiple(self) -> bool: ...
    @property
    def mandatory(self) -> bool: ...
    def __init__(self, type: int, multiple: bool = False, mandatory: bool = False) -> None: ...

class ParsedItem:
    @property
    def type(self) -> int: ...
    @property
    def offset(self) -> int:
        """Of the item header, relative to the start of the command."""
    @property
    def payload(self) -> bytes: ...
    def __init__(self, type: int, offset: int, payload: bytes) -> None: ...
    @property
    def u64(self) -> int: ...
    @property
    def string(self) -> str:
        """The payload of a validated string item, without its NUL."""

class PayloadRule:
    """The shape an item's payload must have before anything reads it."""

    @property
    def exact(self) -> int | None: ...
    @property
    def minimum(self) -> int: ...
    @property
    def multiple(self) -> int: ...
    @property
    def check(self) -> Callable[[bytes], None] | None: ...
    def __init__(self, exact: int | None = None, minimum: int = 0, multiple: int = 1,
                 check: Callable[[bytes], None] | None = None) -> None: ...

PAYLOAD_RULES: Mapping[int, PayloadRule]

def str_valid(payload: bytes) -> bool:
    """kdbus string rule: non-empty and the first NUL is the last byte."""

def validate_sysname(payload: bytes) -> None:
    """Names that become file names or descriptions: 1..63 of [A-Za-z0-9_], inner '-' and '.'."""

def validate_item(item_type: int, payload: bytes) -> None:
    """Check a payload against its type's rule (raises KdbusError); unknown types have none."""

def walk_items(data: bytes, start: int, accepted: Mapping[int, ItemSpec]) -> dict[int, list[ParsedItem]]:
    """Walk and validate the items in data[start:], keyed by type."""

MSG_ITEMS: Mapping[int, ItemSpec]
"""The items a message (kdbus_msg) may carry."""

def walk_message(data: bytes, start: int) -> list[tuple[int, int, int]]:
    """Walk and validate a message's items, data[start:]: (type, offset, size) each, in order."""
