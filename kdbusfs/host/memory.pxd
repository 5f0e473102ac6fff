from posix.types cimport pid_t


cdef class ProcessMemory:
    cpdef bytes read(self, pid_t tid, unsigned long long address, Py_ssize_t size)
    cpdef read_into(self, pid_t tid, unsigned long long address, Py_ssize_t size, object buffer,
                    Py_ssize_t offset)
    cpdef write(self, pid_t tid, unsigned long long address, object data)
