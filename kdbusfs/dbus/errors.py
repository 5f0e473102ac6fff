"""What the codec raises: values that cannot be marshalled, and data that is not a valid
serialisation. Both are ValueErrors, so `except ValueError` catches every codec failure."""


class EncodeError(ValueError):
    """A value that does not fit its D-Bus type, or a message that breaks the specification."""


class DecodeError(ValueError):
    """Bytes that are not a valid serialisation of the type or message they should hold."""
