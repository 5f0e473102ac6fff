# cython: language_level=3
"""Reply trackers: a call that expects an answer, from whom, by when.

Compiled: every synchronous call makes a SyncWait and a Reply and ends both, and the reply's SEND
finds its tracker among the caller's; the fields are in reply.pxd for send.pyx to read typed.
"""

import errno as _errno


cdef class SyncWait:
    """A caller blocked in a synchronous SEND; `errno` (and `reply`) is set when it may return."""

    def __init__(self, caller, errno=None, reply=None, token=None, cancel_fd=None, passed=None):
        self.caller = caller
        self.errno = errno
        self.reply = reply
        self.token = token
        self.cancel_fd = cancel_fd
        self.passed = passed

    def cancel(self):
        """The caller's CANCEL_FD fired: stop waiting; a late reply finds no tracker (EBADSLT)."""
        if self.errno is not None:
            return
        bus = self.caller.bus
        for reply in list(self.caller.trackers):
            if (<Reply>reply).sync is self:
                bus.forget_reply(reply)
        self.finish(_errno.ECANCELED)

    @property
    def done(self):
        return self.errno is not None

    cpdef finish(self, int err, reply=None, passed=None):
        if self.errno is not None:
            if passed is not None:
                passed.close()
            return
        self.errno = err
        self.reply = reply
        self.passed = passed
        sync_waits = self.caller.sync_waits
        if self in sync_waits:
            sync_waits.remove(self)
        self.caller.bus.domain.complete(self)

    def __repr__(self):
        return f"SyncWait(caller={self.caller!r}, errno={self.errno!r}, reply={self.reply!r})"


cdef class Reply:
    """A call awaiting its answer: from `caller`, by `replier`, before `deadline_ns`."""

    def __init__(self, caller, replier, unsigned long long cookie, unsigned long long deadline_ns, name_id=None,
                 sync=None, bint waiting=True):
        self.caller = caller
        self.replier = replier
        self.cookie = cookie
        self.deadline_ns = deadline_ns
        self.name_id = name_id
        self.sync = sync
        self.waiting = waiting

    def __repr__(self):
        return (f"Reply(caller={self.caller.id}, replier={self.replier.id}, cookie={self.cookie}, "
                f"waiting={self.waiting})")
