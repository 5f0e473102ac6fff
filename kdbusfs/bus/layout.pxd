# The C-level interface of layout.pyx, for the compiled modules that lay messages out (queue.pyx).
from .message cimport Staged
from .pool cimport Pool


cpdef tuple layout_size(Staged msg, meta, Py_ssize_t meta_pad)
cpdef Py_ssize_t last_item_padding(items) except -1
cpdef tuple layout_for(Staged msg, meta)
cpdef write(Staged msg, Pool pool, Py_ssize_t offset, meta, tuple layout)
cpdef render(Staged msg, buf, Py_ssize_t offset, meta, tuple layout)
