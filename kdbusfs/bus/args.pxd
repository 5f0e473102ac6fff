# The C-level interface of args.pyx, for the compiled command frame (kdbusfs/dispatch.pyx) and the
# compiled bodies (SEND, RECV).

cdef class Args:
    cdef readonly unsigned long long address
    cdef readonly bytes data
    cdef readonly object layout
    cdef readonly dict items
    cdef readonly bint negotiate
    # The fixed part's size (the layout's).
    cdef Py_ssize_t size
    # The fixed part as a named tuple, made only when a body (or a write-back) asks for it.
    cdef object _fields
    # The fixed part going back, once a body set anything (a private copy, filled in place).
    cdef bytes _out
    # Whether `_out` may be held elsewhere (returned by fixed(), or made by pack): put() copies it.
    cdef bint _handed_out

    cdef object unpacked(self)
    cdef unsigned long long return_flags_in(self)
    cdef unsigned long long return_flags_out(self)
    cdef int put(self, Py_ssize_t offset, unsigned long long value) except -1
    cdef bint changed(self) except -1
    cpdef unsigned long long u64(self, str name) except? 0

cdef Args make_args(unsigned long long address, bytes data, object layout, Py_ssize_t size,
                    dict items)
cpdef bytes copy_in(object caller, unsigned long long address, object layout, bytes in_data)
