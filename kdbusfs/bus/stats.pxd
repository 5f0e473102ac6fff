# The C-level interface of stats.pyx, for the compiled connection and send paths.

cdef class Counters:
    # SENDs that succeeded, and the PAYLOAD_VEC bytes they carried.
    cdef public unsigned long long messages_sent
    cdef public unsigned long long bytes_sent
    # Messages taken by RECV (not PEEK or DROP) or as a synchronous call's reply, and their
    # PAYLOAD_VEC bytes.
    cdef public unsigned long long messages_received
    cdef public unsigned long long bytes_received
    # Messages this receiver lost: no room in its pool or quota (RECV reports them as dropped).
    cdef public unsigned long long messages_dropped

    cpdef sent(self, unsigned long long payload)
    cpdef received(self, unsigned long long payload)
