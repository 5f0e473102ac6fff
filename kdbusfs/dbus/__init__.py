"""D-Bus messages and values: the type system, both wire formats and the command-line notation.

kdbus carries opaque payloads; the libraries of its time put D-Bus messages in them, and sd-bus (the
one that spoke kdbus) used the GVariant encoding (header version 2). Classic D-Bus peers and
capture tools (Wireshark) use the dbus1 encoding. This package holds both, with the D-Bus
specification's limits (signatures of 255 bytes, 32 nested arrays and structs, 64 nested
containers with variants, arrays of 64 MiB, messages of 128 MiB) and name rules:

    signature.py  parse signatures into typed trees (alignment and sizes for both encodings)
    names.py      name and path rules; ObjectPath, Signature and Variant values
    gvariant.py   GVariant serialisation of values (normal form)
    dbus1.py      dbus1 marshalling of values
    message.py    DBusMessage: type, flags, serial, header fields, body
    wire.py       framing: encode_gvariant / encode_dbus1, decode (either framing)
    notation.py   busctl's argument notation, its verbose tree, its JSON

Values are plain Python: ints, floats, bools, strs (ObjectPath and Signature for 'o' and 'g'),
lists for arrays, dicts for arrays of dict entries, tuples for structs, Variant for 'v'.

    from kdbusfs.dbus import DBusMessage, Variant, wire

    call = DBusMessage.method_call("org.example.Clock", "/clock", "org.example.Clock", "Set",
                                   "a{sv}", ({"hour": Variant("u", 12)},), serial=1)
    payload = wire.encode_gvariant(call)      # what sd-bus sent on kdbus
    assert wire.decode(payload) == call
    classic = wire.encode_dbus1(call)         # what dbus-daemon and Wireshark read
"""

from . import dbus1, gvariant, notation, wire
from .errors import DecodeError, EncodeError
from .message import DBusMessage, HeaderField, MessageFlags, MessageType
from .names import ObjectPath, Signature, Variant
from .signature import DBusType, SignatureError, parse_signature, parse_type

__all__ = [
    "DBusMessage", "DBusType", "DecodeError", "EncodeError", "HeaderField", "MessageFlags", "MessageType",
    "ObjectPath", "Signature", "SignatureError", "Variant", "dbus1", "gvariant", "notation",
    "parse_signature", "parse_type", "wire",
]
