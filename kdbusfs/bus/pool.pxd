# The C-level interface of pool.pyx, for the compiled modules that fill and account slices.

cdef class Slice:
    cdef public Py_ssize_t offset
    cdef public Py_ssize_t size
    cdef public bint free
    cdef public bint bus_ref
    cdef public bint user_ref
    cdef public bint accounted


cdef class Pool:
    cdef readonly Py_ssize_t size
    cdef readonly object buffer
    cdef readonly bint client_writable
    cdef public Py_ssize_t accounted_size
    cdef public list dirty
    cdef list _offsets
    cdef dict _slices
    cdef list _free

    cpdef Slice alloc(self, Py_ssize_t size, bint accounted=*)
    cpdef touched(self, Py_ssize_t start, Py_ssize_t end)
    cpdef publish(self, Slice piece)
    cpdef release_bus_ref(self, Slice piece)
    cpdef free_user(self, offset)
    cdef _release(self, Slice piece)
