# The C-level interface of reply.pyx, for the compiled send path.

cdef class SyncWait:
    cdef public object caller
    # errno to fail with, or 0 with the reply's (offset, size, return_flags). Named errno_ in C,
    # where errno is the C library's.
    cdef public object errno "errno_"
    cdef public object reply
    # The edge's handle for the blocked request (the FUSE unique), opaque here.
    cdef public object token
    # The caller's CANCEL_FD (a duplicate the edge watches): readable means give up.
    cdef public object cancel_fd
    # Descriptors the reply passes, for the edge to install in the caller or close.
    cdef public object passed

    cpdef finish(self, int err, reply=*, passed=*)


cdef class Reply:
    cdef public object caller
    cdef public object replier
    cdef public unsigned long long cookie
    cdef public unsigned long long deadline_ns
    # The name registration the call went through, so the tracker can follow the name's owner.
    cdef public object name_id
    cdef public SyncWait sync
    # Set once the call was queued for the replier (an answer may then come).
    cdef public bint waiting
