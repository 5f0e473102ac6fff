"""What the codec raises: values that cannot be marshalled, and data that is not a valid
serialisation. Both are ValueErrors, so `except ValueError` catches every codec failure."""


class EncodeError(ValueError):
    """A value that does not fit its D-Bus type, or a message that breaks the specification."""


class DecodeError(ValueError):
    """Bytes that are not a valid serialisation of the type or message they should hold."""


class TooManyElements(DecodeError):
    """A valid serialisation with more array elements than the decoder was allowed to read one by
    one (kdbusfs bounds the time a message's decoding takes; D-Bus itself has no such limit)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} array elements that are not bytes or numbers")
        self.limit = limit
