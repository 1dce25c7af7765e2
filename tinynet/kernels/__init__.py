"""numba kernels: the hot loops of the ops, with no autograd in them.

Every kernel is ``@njit(cache=True)`` so it compiles once per machine, not once per process.
"""
