"""Helpers for comparing tinynet with a reference (PyTorch or a slow NumPy oracle)."""

import numpy as np

import tinynet

# float64: the two implementations differ only in rounding order; float32: in that and in
# float32 accumulation over up to thousands of terms.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
ATOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def assert_close(actual, expected, dtype=None, scale=None):
    """Elementwise |actual - expected| <= ATOL + RTOL * |expected| at the dtype's tolerance.

    scale: add RTOL * scale to the absolute tolerance, for outputs that are sums of terms much
    larger than the result (e.g. pass np.abs(expected).max()).
    """
    actual = np.asarray(getattr(actual, "data", actual))
    expected = np.asarray(expected)
    dtype = np.dtype(dtype or actual.dtype)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    atol = ATOL[dtype] + (RTOL[dtype] * scale if scale is not None else 0.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=atol)


def to_torch(torch, array, requires_grad=False):
    """A torch tensor with the same values and dtype (a copy, so tinynet's data stays put)."""
    return torch.tensor(np.array(array), requires_grad=requires_grad)


def module_gradcheck(module, x) -> bool:
    """tinynet.gradcheck of a float64 module's output against finite differences, with respect
    to its input x (a Tensor that requires grad) and every one of its parameters."""
    params = list(module.parameters())
    return tinynet.gradcheck(lambda x, *p: module(x), [x, *params], atol=1e-7, rtol=1e-5)
