"""conv2d: output shapes, forward against tinynet.reference, finite-difference gradients,
PyTorch parity, hand-computed values, argument errors, and the skipped input gradient."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import reference
from tinynet.testing.strategies import Conv, conv_cases, pair

from compare import assert_close, to_torch
from strategies import grad_layouts, is_channel_major, laid_out, layouts, seeds, uniform


def output_size(conv):
    """OH, OW = floor((H + pad_top + pad_bottom - kh) / sh) + 1 (and alike for W)."""
    (top, bottom), (left, right) = conv.pads
    sh, sw = pair(conv.stride)
    return (conv.h + top + bottom - conv.kh) // sh + 1, (conv.w + left + right - conv.kw) // sw + 1


# ------------------------------------------------------------------ shapes and the reference
@given(conv=conv_cases(max_side=10), seed=seeds)
def test_output_shape_follows_the_size_formula(conv, seed):
    x, weight, bias = conv.arrays(seed, np.float32)
    out = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
    assert out.shape == (conv.n, conv.c_out) + output_size(conv)
    assert out.dtype == np.float32
    if conv.padding == "same":
        assert out.shape[2:] == (conv.h, conv.w)
    # Channel-major memory behind the NCHW view, so the next layer's GEMM needs no transpose.
    assert is_channel_major(out.data)


@given(conv=conv_cases(), seed=seeds)
def test_forward_matches_the_reference(conv, seed):
    x, weight, bias = conv.arrays(seed)
    out = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
    expected = reference.conv2d(x, weight, bias, conv.stride, conv.padding).data
    assert_close(out, expected, scale=np.abs(expected).max())


# ------------------------------------------------------------------ gradients
@given(conv=conv_cases(max_batch=2, max_channels=3, max_side=6), seed=seeds)
@example(conv=Conv(2, 3, 2, 4, 5, 1, 1), seed=0)  # the 1x1 path without im2col
@example(conv=Conv(1, 2, 2, 5, 4, 2, 4, padding="same"), seed=1)  # even kernel, uneven padding
def test_gradients_match_finite_differences(conv, seed):
    x, weight, bias = conv.arrays(seed)
    inputs = [tinynet.tensor(a, requires_grad=True) for a in (x, weight, bias) if a is not None]

    def fn(x, weight, bias=None):
        return F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)

    assert tinynet.gradcheck(fn, inputs, atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------ large batches in chunks
@given(
    conv=conv_cases(max_batch=5, max_channels=3, max_side=7),
    seed=seeds,
    per_chunk=st.sampled_from([1, 2]),
)
@example(conv=Conv(5, 3, 4, 7, 6, 3, 3, stride=2, padding=1), seed=0, per_chunk=2)  # 2, 2, 1
def test_images_in_chunks_give_the_unchunked_results(conv, seed, per_chunk):
    """A column matrix over CHUNK_BYTES is built and multiplied a few images at a time (the big
    layers of a real batch); shrink the limit so these small batches go through that path with
    ``per_chunk`` images per chunk, and compare with one chunk, in forward and every gradient."""
    from tinynet.ops import conv as conv_module

    x_np, w_np, b_np = conv.arrays(seed)

    def run():
        x, weight = (tinynet.tensor(a, requires_grad=True) for a in (x_np, w_np))
        bias = tinynet.tensor(b_np, requires_grad=True) if conv.with_bias else None
        out = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
        out.backward(uniform(seed + 3, out.shape))
        return [out.data, x.grad, weight.grad] + ([bias.grad] if conv.with_bias else [])

    whole = run()
    rows = conv.c_in * conv.kh * conv.kw
    pixels = whole[0].shape[2] * whole[0].shape[3]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_module, "CHUNK_BYTES", per_chunk * rows * pixels * 8)
        assert len(conv_module.image_chunks(conv.n, rows, pixels, 8)) == -(-conv.n // per_chunk)
        chunked = run()
    for actual, expected in zip(chunked, whole):
        assert_close(actual, expected, scale=np.abs(expected).max())


# ------------------------------------------------------------------ PyTorch parity
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(conv=conv_cases(), seed=seeds, input_layout=layouts, grad_layout=grad_layouts)
@example(conv=Conv(2, 4, 3, 5, 6, 1, 1), seed=0, input_layout="channel_major", grad_layout="nchw")
@example(
    conv=Conv(2, 2, 3, 6, 5, 4, 2, padding="same"), seed=1, input_layout="nchw", grad_layout="nchw"
)
@example(
    conv=Conv(2, 3, 2, 9, 8, 3, 2, stride=(2, 3), padding=(1, 2)),
    seed=2,
    input_layout="channel_major",
    grad_layout="channel_major",
)
def test_matches_torch(torch, dtype, conv, seed, input_layout, grad_layout):
    """Forward and all three gradients, with the input and the upstream gradient in the memory
    layouts they reach conv in (strategies.laid_out): channel-major as tinynet's conv outputs,
    plain C-contiguous NCHW, or for the gradient a broadcast view."""
    x_np, w_np, b_np = conv.arrays(seed, dtype)
    x = tinynet.tensor(laid_out(x_np, input_layout), requires_grad=True)
    weight = tinynet.tensor(w_np, requires_grad=True)
    bias = tinynet.tensor(b_np, requires_grad=True) if conv.with_bias else None
    out = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
    g = laid_out(uniform(seed + 3, out.shape, dtype=dtype), grad_layout)
    out.backward(g)

    tx, tw = to_torch(torch, x_np, True), to_torch(torch, w_np, True)
    tb = to_torch(torch, b_np, True) if conv.with_bias else None
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride=conv.stride, padding=conv.padding)
    t_out.backward(to_torch(torch, g))

    pairs = [(out, t_out), (x.grad, tx.grad), (weight.grad, tw.grad)]
    pairs += [(bias.grad, tb.grad)] if conv.with_bias else []
    for actual, expected in pairs:
        expected = expected.detach().numpy()
        assert np.dtype(actual.dtype) == dtype
        assert_close(actual, expected, scale=np.abs(expected).max())


def test_broadcast_upstream_gradient_matches_torch(torch):
    """out.sum().backward() hands conv a broadcast view of ones, not an array it can reshape."""
    conv = Conv(2, 3, 4, 6, 6, 3, 3, stride=2, padding=1)
    x_np, w_np, b_np = conv.arrays(0)
    x, weight = tinynet.tensor(x_np, requires_grad=True), tinynet.tensor(w_np, requires_grad=True)
    F.conv2d(x, weight, stride=2, padding=1).sum().backward()
    tx, tw = to_torch(torch, x_np, True), to_torch(torch, w_np, True)
    torch.nn.functional.conv2d(tx, tw, stride=2, padding=1).sum().backward()
    assert_close(x.grad, tx.grad.numpy())
    assert_close(weight.grad, tw.grad.numpy())


# ------------------------------------------------------------------ values by hand
# x = 1..9 in a 3x3 image, W = [[1, 2], [3, 4]]:
#     out[p, q] = x[p, q] + 2 x[p, q+1] + 3 x[p+1, q] + 4 x[p+1, q+1]
X = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
W = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_hand_computed_forward_and_gradients():
    x, weight = tinynet.tensor(X, requires_grad=True), tinynet.tensor(W, requires_grad=True)
    bias = tinynet.tensor(np.array([1.0]), requires_grad=True)
    out = F.conv2d(x, weight, bias)
    # 1 + 4 + 12 + 20 = 37 (+1), 2 + 6 + 15 + 24 = 47 (+1), ...
    np.testing.assert_array_equal(out.data[0, 0], [[38.0, 48.0], [68.0, 78.0]])
    out.sum().backward()
    # dW[i, j]: the sum of the 2x2 block of x at offset (i, j), e.g. 1 + 2 + 4 + 5 = 12
    np.testing.assert_array_equal(weight.grad[0, 0], [[12.0, 16.0], [24.0, 28.0]])
    np.testing.assert_array_equal(bias.grad, [4.0])  # four output pixels
    # dx: the kernel weights of every window covering the pixel; the centre is in all four
    np.testing.assert_array_equal(
        x.grad[0, 0], [[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]]
    )


def test_hand_computed_padding_and_stride():
    # A ring of zeros around x and windows of ones two pixels apart: out = [[x00, x01 + x02],
    # [x10 + x20, x11 + x12 + x21 + x22]]
    out = F.conv2d(X, np.ones((1, 1, 2, 2)), stride=2, padding=1)
    np.testing.assert_array_equal(out.data[0, 0], [[1.0, 5.0], [11.0, 28.0]])


def test_hand_computed_same_with_an_even_kernel():
    # 'same' pads 0 rows above and 1 below, 0 columns left and 1 right: the last row and column
    # see zeros, e.g. out[0, 2] = x[0, 2] + 3 x[1, 2] = 3 + 18
    out = F.conv2d(X, W, padding="same")
    np.testing.assert_array_equal(
        out.data[0, 0], [[37.0, 47.0, 21.0], [67.0, 77.0, 33.0], [23.0, 26.0, 9.0]]
    )


# ------------------------------------------------------------------ errors
def _zeros(*shape, dtype=np.float32):
    return tinynet.tensor(np.zeros(shape, dtype=dtype))


BAD = {
    "input not 4-D": (
        dict(input=_zeros(3, 5, 5), weight=_zeros(2, 3, 3, 3)),
        ValueError,
        r"conv2d: input must be 4-D .*got shape \(3, 5, 5\)",
    ),
    "weight not 4-D": (
        dict(input=_zeros(1, 3, 5, 5), weight=_zeros(2, 27)),
        ValueError,
        r"conv2d: weight must be 4-D .*got shape \(2, 27\)",
    ),
    "channel mismatch": (
        dict(input=_zeros(1, 3, 5, 5), weight=_zeros(2, 4, 3, 3)),
        ValueError,
        r"conv2d: input has 3 channels .* but weight expects C_in=4",
    ),
    "bias shape": (
        dict(input=_zeros(1, 3, 5, 5), weight=_zeros(2, 3, 3, 3), bias=_zeros(3)),
        ValueError,
        r"conv2d: bias must have shape \(2,\) .*got \(3,\)",
    ),
    "kernel larger than padded input": (
        dict(input=_zeros(1, 1, 2, 3), weight=_zeros(1, 1, 5, 5), padding=1),
        ValueError,
        r"conv2d: kernel size \(5, 5\) of weight is larger than the padded input "
        r"\(4, 5\)",
    ),
    "empty kernel": (
        dict(input=_zeros(1, 3, 5, 5), weight=_zeros(2, 3, 0, 3)),
        ValueError,
        r"conv2d: weight must have C_out, kH and kW >= 1; got .*\(2, 3, 0, 3\)",
    ),
    "zero stride": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3), stride=(1, 0)),
        ValueError,
        r"conv2d: stride must be >= 1; got \(1, 0\)",
    ),
    "negative padding": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3), padding=-1),
        ValueError,
        r"conv2d: padding must be >= 0; got \(-1, -1\)",
    ),
    "'same' with a stride": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3), stride=2, padding="same"),
        ValueError,
        r"conv2d: padding='same' needs stride 1 .*got stride=\(2, 2\)",
    ),
    "unknown padding string": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3), padding="full"),
        ValueError,
        r"conv2d: padding must be an int, a pair of ints, 'same' or 'valid'; "
        r"got 'full'",
    ),
    "weight dtype": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3, dtype=np.float64)),
        TypeError,
        r"conv2d: input and weight must have the same dtype; got input float32 "
        r"and weight float64",
    ),
    "bias dtype": (
        dict(input=_zeros(1, 1, 5, 5), weight=_zeros(1, 1, 3, 3), bias=_zeros(1, dtype=np.float64)),
        TypeError,
        r"conv2d: input and bias must have the same dtype",
    ),
    "integer input": (
        dict(input=_zeros(1, 1, 5, 5, dtype=np.int64), weight=_zeros(1, 1, 3, 3, dtype=np.int64)),
        TypeError,
        r"conv2d: input must be float32 or float64; got int64",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise_clear_errors(case):
    kwargs, error, message = BAD[case]
    with pytest.raises(error, match=message):
        F.conv2d(**kwargs)


# ------------------------------------------------------------------ what backward computes
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, True)])
def test_only_requested_gradients_are_computed(needs, monkeypatch):
    """The network's first conv gets the image, which needs no gradient: its backward must not
    run the dX GEMM and col2im at all."""
    x_np, w_np, b_np = Conv(2, 3, 4, 6, 6, 3, 3, padding=1).arrays(0)
    x, weight, bias = (
        tinynet.tensor(a, requires_grad=r) for a, r in zip((x_np, w_np, b_np), needs)
    )
    if not needs[0]:

        def fail(*args):
            raise AssertionError("col2im ran for an input that needs no gradient")

        monkeypatch.setattr("tinynet.ops.conv.col2im", fail)
    F.conv2d(x, weight, bias, padding=1).sum().backward()
    assert [t.grad is not None for t in (x, weight, bias)] == list(needs)


def test_no_grad_records_nothing():
    x = _zeros(1, 2, 4, 4)
    weight = tinynet.tensor(np.ones((3, 2, 3, 3), np.float32), requires_grad=True)
    with tinynet.no_grad():
        out = F.conv2d(x, weight)
    assert out.shape == (1, 3, 2, 2) and not out.requires_grad
