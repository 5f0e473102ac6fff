# The C-level interface of queue.pyx, for the compiled modules that queue and receive messages.

from .pool cimport Pool, Slice


cdef class Entry:
    cdef public Slice slice
    cdef public long long priority
    cdef public unsigned long long src_id
    cdef public unsigned long long cookie
    # Who is charged for it in the receiver's quota: a user's uid or KERNEL_USER.
    cdef public long long user_key
    cdef public Py_ssize_t fds
    # The call tracker this message answers to when received, if it expects a reply.
    cdef public object reply
    # The name registration it was addressed through (so it can move with the name).
    cdef public object name_id
    cdef public bint expects_reply
    cdef public Py_ssize_t seq
    # Set by PEEK: the client may be looking at the slice, so it outlives the entry until FREE.
    cdef public bint peeked
    # The message passed descriptors that could not be installed in the receiver.
    cdef public bint incomplete_fds
    # The slice's bytes as the daemon wrote them, for a message that may move to another pool with
    # its name while the pool it sits in is writable by its client.
    cdef public object kept
    # Descriptors the message passes, held for this receiver's RECV (shared with the other
    # receivers of a broadcast).
    cdef public object passed
    # Its PAYLOAD_VEC bytes, for the receiver's statistics.
    cdef public Py_ssize_t payload

cdef class UserQuota:
    cdef public Py_ssize_t memory
    cdef public Py_ssize_t msgs
    cdef public Py_ssize_t fds

cdef class Quotas:
    # The receiving connection's id, for messages.
    cdef public object owner_id
    cdef public dict users
    cpdef UserQuota charge(self, Pool pool, long long user_key, Py_ssize_t size, Py_ssize_t fds)
    cpdef uncharge(self, long long user_key, Py_ssize_t size, Py_ssize_t fds)

cdef class Queue:
    cdef public dict entries
    # (priority, seq) of every entry added since the queue was last empty, a heap.
    cdef list _by_priority
    cdef Py_ssize_t _seq
    cpdef add(self, Entry entry)
    cpdef Entry peek(self, priority=*)
    cpdef remove(self, Entry entry)
