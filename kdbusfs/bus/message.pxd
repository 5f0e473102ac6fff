# The C-level interface of message.pyx, for the compiled modules that lay a message out (layout.pyx).
from libc.stdint cimport int64_t, uint64_t


# Where each kdbus_msg header field is, from structs.MSG's one declaration: message.pyx reads the
# sender's header at these offsets and layout.pyx writes the receiver's.
cdef struct MsgOffsets:
    Py_ssize_t size
    Py_ssize_t flags
    Py_ssize_t priority
    Py_ssize_t dst_id
    Py_ssize_t src_id
    Py_ssize_t payload_type
    Py_ssize_t cookie
    Py_ssize_t timeout_ns

cdef MsgOffsets msg_offsets()


cdef class Passed:
    # The daemon's duplicates, and where in the message each one's number goes (offsets from the
    # start of the kdbus_msg in the receiver's slice).
    cdef public list fds
    cdef public list slots
    cdef public object release
    cdef public Py_ssize_t holders


cdef class Staged:
    cdef public uint64_t flags
    cdef public int64_t priority
    cdef public uint64_t dst_id
    cdef public uint64_t src_id
    cdef public uint64_t payload_type
    cdef public uint64_t cookie
    cdef public uint64_t timeout_or_reply
    # Header-less item bytes as the receiver gets them, up to the end of the last item (unpadded).
    cdef public bytearray items
    # (position of a PAYLOAD_OFF's offset field in `items`, stream offset or None for a NULL vec).
    cdef public list offsets
    # Data vecs: (stream offset, sender address, size).
    cdef public list vecs
    cdef public Py_ssize_t n_payload
    cdef public object bloom
    cdef public object dst_name
    cdef public Py_ssize_t n_fds
    # Positions in `items` of fd numbers the receiver gets (FDS entries, memfd fds): they read -1
    # (and RECV says INCOMPLETE_FDS) unless the receiver's RECV can install the `passed` ones.
    cdef public list fd_slots
    cdef public Passed passed
    cdef public uint64_t seqnum
    cdef public object timestamp
    cdef public object read_into
    # Whether the one read of the payload straight into a receiver's pool is spent (or, for a
    # message with several receivers, not wanted); later receivers get this private copy.
    cdef public bint payload_read
    cdef public object payload_copy

    cpdef release_passed(self)


cdef class Parsed:
    cdef readonly bytes data
    cdef readonly uint64_t src_id
    # Its items as (type, offset, size).
    cdef readonly list found
