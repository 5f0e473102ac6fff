# The C-level interface of args.pyx, for the compiled command frame (kdbusfs/dispatch.pyx).

cdef class Args:
    cdef readonly unsigned long long address
    cdef readonly bytes data
    cdef readonly object layout
    cdef readonly dict items
    cdef readonly bint negotiate
    # The fixed part as a named tuple, made only when a body (or a write-back) asks for it.
    cdef object _fields
    # What the body set to go back; None while it set nothing.
    cdef object _out

    cdef object unpacked(self)
    cdef unsigned long long return_flags_in(self)
    cdef bint changed(self) except -1
    cpdef unsigned long long u64(self, str name) except? 0

cpdef bytes copy_in(object caller, unsigned long long address, object layout, bytes in_data)
