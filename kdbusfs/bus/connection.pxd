# The C-level interface of connection.pyx, for the compiled modules that deliver messages (send.pyx).

from .message cimport Staged
from .pool cimport Pool
from .queue cimport Entry, Queue, Quotas
from .stats cimport Counters


cdef class Connection:
    cdef readonly unsigned long long id
    cdef public object bus
    cdef public object endpoint
    cdef public unsigned long long flags
    cdef public object kind
    cdef public unsigned long long attach_flags_send
    cdef public unsigned long long attach_flags_recv
    cdef public Pool pool
    # Credentials of the task that opened the file (policy, accounting).
    cdef public object opener
    # The HELLO caller's process facts, as CONN_INFO reports them.
    cdef public object snapshot
    cdef public object user
    cdef public object description
    cdef public bint owner
    cdef public bint privileged
    cdef public bint active
    cdef public Queue queue
    # Broadcasts (and hand-over moves) that could not be queued, reported by the next RECV.
    cdef public Py_ssize_t lost
    # Name records (owned, queued, activator) in acquisition order.
    cdef public list name_records
    # Calls this connection made that await a reply, and calls others made to it.
    cdef public list trackers
    cdef public list awaited
    # Synchronous SENDs of this connection that are blocked.
    cdef public list sync_waits
    # Ordinary connections only: which signals and notifications they take.
    cdef public object matches
    # How this connection sees other tasks' ids (its namespaces).
    cdef public object view
    # Each sending user's share of the pool.
    cdef public Quotas quota
    cdef public Counters stats

    cpdef Entry enqueue(self, Staged msg, Connection sender, process, reply=*, name_id=*)
    cdef _dequeue(self, Entry entry)
    cpdef recv(self, bint peek, bint drop, priority)
    cpdef Py_ssize_t take_lost(self)
    cdef bint is_readable(self)
