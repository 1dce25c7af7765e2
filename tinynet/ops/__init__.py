"""Differentiable ops, one module per family: each op's forward and backward side by side.

The fast loops they call live in ``tinynet.kernels``; the public names are re-exported by
``tinynet.functional``.
"""
