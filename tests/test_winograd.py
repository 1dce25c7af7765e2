"""Winograd F(2x2, 3x3) (tinynet/inference/winograd.py): against the exact convolution (computed
in extended precision) within the stated error bound, in float64 and float32, over odd sizes and
partial last tiles; the bias and ReLU epilogue; writing into a slab of a larger buffer; chunks
and threads; hand-computed values; and the arguments it refuses."""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinynet.inference import winograd
from tinynet.inference.winograd import (
    error_bound,
    filter_transform,
    gamma,
    scratch_size,
    use_winograd,
    winograd_conv3x3,
)
from tinynet.kernels import winograd as kernels

from strategies import seeds, uniform

EXACT = np.longdouble  # x86-64's 80-bit extended precision: u = 2⁻⁶⁴


def exact_conv(x, weight, bias, relu=False):
    """The 3x3, stride-1, padding-1 convolution of x (C, N, H, W), in EXACT precision, as the
    (O, N·H·W) rows winograd_conv3x3 writes: y[o, n, p, q] = b[o] + Σ w[o, c, i, j]
    x[c, n, p + i - 1, q + j - 1]."""
    c, n, h, w = x.shape
    padded = np.zeros((c, n, h + 2, w + 2), dtype=EXACT)
    padded[:, :, 1:-1, 1:-1] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    y = np.einsum("ocij,cnpqij->onpq", weight.astype(EXACT), windows)
    if bias is not None:
        y += bias.astype(EXACT)[:, None, None, None]
    y = y.reshape(len(weight), -1)
    return np.maximum(y, 0) if relu else y


def reference_share(x, weight, bias, dtype):
    """The exact reference's own rounding: γ_{9C+1} in EXACT precision times Σ |w| |x|, which the
    sum in bound (1) bounds (error_bound divided by its γ_{C+11})."""
    channels = x.shape[0]
    total = error_bound(x, weight, bias, dtype) / gamma(channels + 11, dtype)
    return gamma(9 * channels + 1, EXACT) * total


@st.composite
def cases(draw, max_channels=5, max_side=9):
    """(C, O, N, H, W): odd and even sides (partial last tiles), 1x1 images, batches 1 to 3."""
    return (
        draw(st.integers(1, max_channels)),
        draw(st.integers(1, max_channels)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )


def arrays(case, seed, dtype):
    c, o, n, h, w = case
    x = uniform(seed, (c, n, h, w), dtype=dtype)
    weight = uniform(seed + 1, (o, c, 3, 3), dtype=dtype)
    bias = uniform(seed + 2, (o,), dtype=dtype)
    return x, weight, bias


def run(x, weight, bias, relu=False, scratch=None):
    out = np.empty((len(weight), x[0].size), dtype=x.dtype)
    return winograd_conv3x3(x, filter_transform(weight), bias, relu, out, scratch)


# ------------------------------------------------------------------ against the exact result
@given(case=cases(), seed=seeds, dtype=st.sampled_from([np.float64, np.float32]),
       with_bias=st.booleans(), relu=st.booleans())  # fmt: skip
def test_within_the_error_bound_of_the_exact_convolution(case, seed, dtype, with_bias, relu):
    x, weight, bias = arrays(case, seed % 2**30, dtype)
    bias = bias if with_bias else None
    got = run(x, weight, bias, relu)
    assert got.dtype == dtype
    error = np.abs(got.astype(EXACT) - exact_conv(x, weight, bias, relu))
    # ReLU is 1-Lipschitz: it cannot widen the distance to the exact result.
    bound = error_bound(x, weight, bias, dtype) + reference_share(x, weight, bias, dtype)
    assert np.all(error <= bound), f"max error/bound {np.max(error / bound)}"


def test_the_bound_is_tight_enough_to_catch_a_wrong_transform():
    """One transformed filter coefficient with the wrong sign lands far outside the bound."""
    x, weight, bias = arrays((3, 4, 2, 6, 5), 7, np.float64)
    bound = error_bound(x, weight, bias)
    assert np.max(bound) < 1e-12  # float64: the bound is ~1e-15 of the outputs' size
    U = filter_transform(weight)
    U[5] *= -1  # (ξ, ν) = (1, 1)
    wrong = winograd_conv3x3(x, U, bias, False, np.empty((4, 60)))
    assert np.max(np.abs(wrong.astype(EXACT) - exact_conv(x, weight, bias)) - bound) > 0.1


def test_hand_computed_values():
    """One channel, a 3x3 image 1..9, the all-ones filter: each output is the sum of the
    pixels its window covers (the padding adds zeros), plus the bias 0.5; ReLU keeps them."""
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    weight = np.ones((1, 1, 3, 3), np.float32)
    got = run(x, weight, np.array([0.5], np.float32), relu=True).reshape(3, 3)
    expected = np.array([[12, 21, 16], [27, 45, 33], [24, 39, 28]]) + 0.5
    np.testing.assert_array_equal(got, expected)


def test_the_bound_is_at_most_16_times_the_direct_sum():
    """The docstring's claim: the sum in (1) is at most |b| + 16 S, S = Σ |w| · max |x| over
    the output's 3x3 window."""
    x, weight, bias = arrays((4, 3, 2, 7, 6), 3, np.float64)
    total = error_bound(x, weight, bias) / gamma(4 + 11, np.float64)
    c, n, h, w = x.shape
    padded = np.zeros((c, n, h + 2, w + 2))
    padded[:, :, 1:-1, 1:-1] = np.abs(x)
    window_max = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3)).max((-2, -1))
    S = np.einsum("oc,cnpq->onpq", np.abs(weight).sum((2, 3)), window_max).reshape(3, -1)
    assert np.all(total <= np.abs(bias)[:, None] + 16 * S * (1 + 1e-12))


# ------------------------------------------------------------------ epilogue, slab, chunks, threads
@given(case=cases(), seed=seeds)
def test_bias_and_relu_epilogue(case, seed):
    x, weight, bias = arrays(case, seed % 2**30, np.float32)
    plain = run(x, weight, bias)
    np.testing.assert_array_equal(run(x, weight, bias, relu=True), np.maximum(plain, 0))
    np.testing.assert_array_equal(run(x, weight, None), run(x, weight, np.zeros_like(bias)))


@given(case=cases(), seed=seeds, above=st.integers(0, 3), below=st.integers(0, 3))
def test_writes_only_into_its_slab_of_a_larger_buffer(case, seed, above, below):
    x, weight, bias = arrays(case, seed % 2**30, np.float32)
    o = len(weight)
    buffer = np.full((above + o + below, x[0].size), np.nan, np.float32)
    slab = buffer[above : above + o]
    assert winograd_conv3x3(x, filter_transform(weight), bias, True, slab) is slab
    np.testing.assert_array_equal(slab, run(x, weight, bias, relu=True))
    assert np.isnan(buffer[:above]).all() and np.isnan(buffer[above + o :]).all()


@given(case=cases(max_channels=4, max_side=11), seed=seeds, chunk_bytes=st.integers(1, 5000),
       threads=st.integers(1, 3))  # fmt: skip
def test_chunks_and_threads_give_the_same_result(case, seed, chunk_bytes, threads):
    """Small chunks (one row of tiles, a partial last chunk, more chunks than threads) on 1 to 3
    threads, against one chunk on one thread: the same sums, so equal within the bound."""
    x, weight, bias = arrays(case, seed % 2**30, np.float64)
    whole = run(x, weight, bias)
    c, o, n, h, w = case
    before = winograd.CHUNK_BYTES, winograd.LANE_MACS, numba.get_num_threads()
    try:
        winograd.CHUNK_BYTES, winograd.LANE_MACS = chunk_bytes, 1  # a thread for any work
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        scratch = np.empty(scratch_size(c, o, h, w, n, threads), np.float64)
        chunked = run(x, weight, bias, scratch=scratch)
    finally:
        winograd.CHUNK_BYTES, winograd.LANE_MACS = before[:2]
        numba.set_num_threads(before[2])
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=2 * error_bound(x, weight, bias).max())


def test_filter_transform_threaded_and_serial_give_the_same_bits():
    weight = uniform(0, (5, 4, 3, 3), dtype=np.float32)
    U = [
        k(weight, np.empty((16, 5, 4), np.float32))
        for k in (kernels.filter_transform.threaded, kernels.filter_transform.serial)
    ]
    np.testing.assert_array_equal(*U)


# ------------------------------------------------------------------ where it is used
def test_use_winograd_follows_its_rule():
    """The rule of its docstring, on the paper GoogLeNet's layers at 224 and at its edges."""
    assert use_winograd(64, 192, 56, 56, 1) and use_winograd(96, 128, 28, 28, 1)  # conv2, 3a
    assert use_winograd(160, 320, 14, 14, 1) and use_winograd(192, 384, 7, 7, 8)  # 4e, 5b
    assert use_winograd(32, 32, 28, 28, 8) and not use_winograd(16, 32, 28, 28, 8)  # channels
    assert not use_winograd(32, 16, 28, 28, 8) and not use_winograd(3, 64, 56, 56, 1)
    assert not use_winograd(32, 64, 7, 7, 1) and use_winograd(32, 64, 7, 7, 8)  # 2²² MACs
    assert use_winograd(64, 64, 5, 5, 64) and not use_winograd(64, 64, 3, 3, 64)  # 1.44, 1.78
    assert not use_winograd(64, 64, 1, 1, 1024) and not use_winograd(64, 64, 1000, 1, 1)  # 2, 4
    # tiles: 5b at batch 1 has 16 (the 16 GEMMs too narrow), at batch 4 64; 4e at batch 1 49
    assert not use_winograd(192, 384, 7, 7, 1) and not use_winograd(192, 384, 7, 7, 2)
    assert use_winograd(192, 384, 7, 7, 4) and use_winograd(160, 320, 14, 14, 1)
    assert not use_winograd(128, 128, 12, 14, 1) and use_winograd(128, 128, 12, 16, 1)  # 42, 48


# ------------------------------------------------------------------ what it refuses
@pytest.mark.parametrize(
    "shape, stride, padding, message",
    [
        ((4, 3, 5, 5), 1, 1, r"\(O, C, 3, 3\) array; got \(4, 3, 5, 5\)"),
        ((4, 3, 1, 3), 1, 1, r"\(O, C, 3, 3\) array; got \(4, 3, 1, 3\)"),
        ((4, 3, 3, 3), 2, 1, "needs stride 1; got stride=2"),
        ((4, 3, 3, 3), (1, 2), 1, r"needs stride 1; got stride=\(1, 2\)"),
        ((4, 3, 3, 3), 1, 0, "needs padding 1; got padding=0"),
        ((4, 3, 3, 3), 1, (1, 2), r"needs padding 1; got padding=\(1, 2\)"),
        ((4, 3, 3, 3), 1, "valid", "needs padding 1; got padding='valid'"),
    ],
)
def test_refuses_other_kernels_strides_and_paddings(shape, stride, padding, message):
    with pytest.raises(ValueError, match=message):
        filter_transform(np.zeros(shape, np.float32), stride=stride, padding=padding)


def test_same_padding_is_padding_1():
    weight = uniform(0, (2, 3, 3, 3))
    np.testing.assert_array_equal(
        filter_transform(weight, padding="same"), filter_transform(weight)
    )


def test_refuses_bad_arrays():
    x, weight, bias = arrays((3, 4, 2, 5, 5), 0, np.float32)
    U = filter_transform(weight)
    out = np.empty((4, 50), np.float32)
    with pytest.raises(TypeError, match="weight must be float32 or float64; got int64"):
        filter_transform(np.zeros((4, 3, 3, 3), np.int64))
    with pytest.raises(ValueError, match=r"x must be a C-contiguous \(C, N, H, W\) array"):
        winograd_conv3x3(x.transpose(1, 0, 2, 3), U, bias, False, out)
    with pytest.raises(ValueError, match=r"U must be filter_transform\(weight\), \(16, O, 3\)"):
        winograd_conv3x3(x, U[:, :, :2].copy(), bias, False, out)
    with pytest.raises(ValueError, match=r"out must be a C-contiguous \(4, 50\) array"):
        winograd_conv3x3(x, U, bias, False, np.empty((4, 60), np.float32)[:, :50])
    with pytest.raises(ValueError, match=r"out must be a C-contiguous \(4, 50\) array"):
        winograd_conv3x3(x, U, bias, False, np.empty((4, 49), np.float32))
    with pytest.raises(ValueError, match=r"bias must be \(4,\) or None"):
        winograd_conv3x3(x, U, bias[:3], False, out)
    with pytest.raises(TypeError, match="out must be float32 like x; got float64"):
        winograd_conv3x3(x, U, bias, False, out.astype(np.float64))
    with pytest.raises(ValueError, match="scratch must be a contiguous 1-D float32 array"):
        winograd_conv3x3(x, U, bias, False, out, np.empty(10, np.float32))
