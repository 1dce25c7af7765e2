"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: shapes, forward against tinynet.reference,
gradients, PyTorch parity (ties, GoogLeNet's pools, gradient layouts), hand-computed values,
errors."""

import numpy as np
import pytest
from hypothesis import given

import tinynet
import tinynet.functional as F
from tinynet import reference
from tinynet.testing.strategies import POOLS, adaptive_pool_cases, pair, pool_cases

from compare import assert_close, to_torch
from strategies import GRAD_LAYOUTS, distinct, is_channel_major, laid_out, seeds, uniform


# ----------------------------------------------------------------- window counts
def _window_starts(size, kernel, stride, padding, ceil_mode):
    """Where each window starts, counted in the padded input: the windows that fit in it, and
    under ceil_mode one more over an uncovered end unless it would start in the right padding."""
    padded = size + 2 * padding
    starts = list(range(0, padded - kernel + 1, stride))
    last = starts[-1]
    if ceil_mode and last + kernel < padded and last + stride < padding + size:
        starts.append(last + stride)
    return starts


def _assert_matches_torch(torch, name, x_np, seed, layout="nchw", **kwargs):
    """F.<name> and torch.nn.functional.<name> agree on the output and on dL/dx for a random
    upstream gradient; x and the gradient reach tinynet in the given memory layout
    (strategies.laid_out)."""
    x = tinynet.tensor(laid_out(x_np, layout), requires_grad=True)
    out = getattr(F, name)(x, **kwargs)
    g = uniform(seed, out.shape, dtype=x_np.dtype)
    out.backward(laid_out(g, layout))
    tx = to_torch(torch, laid_out(x_np, layout), requires_grad=True)
    t_out = getattr(torch.nn.functional, name)(tx, **kwargs)
    t_out.backward(to_torch(torch, laid_out(g, layout)))
    assert out.dtype == x.grad.dtype == x_np.dtype
    assert_close(out, t_out.detach().numpy())
    assert_close(x.grad, tx.grad.numpy())


# ----------------------------------------------------------------- (a) shapes
@given(pool=pool_cases())
def test_output_shape_counts_the_windows(pool):
    out = getattr(F, pool.op)(tinynet.zeros(*pool.shape), **pool.kwargs)
    kernel, padding = pair(pool.kernel_size), pair(pool.padding)
    stride = pair(pool.stride or pool.kernel_size)
    expected = tuple(
        len(_window_starts(pool.shape[2 + a], kernel[a], stride[a], padding[a], pool.ceil_mode))
        for a in (0, 1)
    )
    assert out.shape == pool.shape[:2] + expected


@given(case=adaptive_pool_cases())
def test_adaptive_output_shape(case):
    shape, output_size = case
    out = F.adaptive_avg_pool2d(tinynet.zeros(*shape), output_size)
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert out.shape == shape[:2] + tuple(o or s for o, s in zip(pair, shape[2:]))


# ------------------------------------------------------------ (b) forward against the reference
@given(pool=pool_cases(), seed=seeds)
def test_sliding_forward_matches_the_reference(pool, seed):
    x = uniform(seed, pool.shape)
    expected = getattr(reference, pool.op)(x, **pool.kwargs)
    assert_close(getattr(F, pool.op)(tinynet.tensor(x), **pool.kwargs), expected.data)


@given(case=adaptive_pool_cases(), seed=seeds)
def test_adaptive_forward_matches_the_reference(case, seed):
    shape, output_size = case
    x = uniform(seed, shape)
    assert_close(
        F.adaptive_avg_pool2d(tinynet.tensor(x), output_size),
        reference.adaptive_avg_pool2d(x, output_size).data,
    )


# ----------------------------------------------------------------- (c) gradcheck
@given(pool=pool_cases(), seed=seeds)
def test_sliding_gradcheck(pool, seed):
    # max pooling gets distinct values: each window's unique winner survives the eps step
    values = distinct(seed, pool.shape) if pool.op == "max_pool2d" else uniform(seed, pool.shape)
    x = tinynet.tensor(values, requires_grad=True)
    op = getattr(F, pool.op)
    assert tinynet.gradcheck(lambda x: op(x, **pool.kwargs), [x], atol=1e-8, rtol=1e-6)


@given(case=adaptive_pool_cases(), seed=seeds)
def test_adaptive_gradcheck(case, seed):
    shape, output_size = case
    x = tinynet.tensor(uniform(seed, shape), requires_grad=True)
    assert tinynet.gradcheck(
        lambda x: F.adaptive_avg_pool2d(x, output_size), [x], atol=1e-8, rtol=1e-6
    )


# ----------------------------------------------------------------- (d) PyTorch parity
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(pool=pool_cases(), seed=seeds)
def test_sliding_matches_torch(torch, dtype, pool, seed):
    x = uniform(seed, pool.shape, dtype=dtype)
    _assert_matches_torch(torch, pool.op, x, seed + 1, **pool.kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=adaptive_pool_cases(), seed=seeds)
def test_adaptive_matches_torch(torch, dtype, case, seed):
    shape, output_size = case
    x = uniform(seed, shape, dtype=dtype)
    _assert_matches_torch(torch, "adaptive_avg_pool2d", x, seed + 1, output_size=output_size)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(pool=pool_cases(op="max_pool2d"), seed=seeds)
def test_max_pool_ties_go_where_torch_sends_them(torch, dtype, pool, seed):
    x = np.random.default_rng(seed).integers(0, 3, pool.shape).astype(dtype)  # windows of ties
    _assert_matches_torch(torch, "max_pool2d", x, seed + 1, **pool.kwargs)


def test_max_pool_nan_and_infinity_as_torch(torch):
    """A NaN wins its window (the last NaN, scanning by rows); a window of -inf sends its
    gradient to its first element."""
    nan, inf = np.nan, np.inf
    x_np = np.array([[[[nan, 1.0, nan, -inf], [2.0, nan, -inf, -inf], [5.0, nan, 1.0, 4.0]]]])
    g = np.arange(1.0, 11.0).reshape(1, 1, 2, 5)
    _assert_max_pool_is_torch_exactly(torch, x_np, g, kernel_size=2, stride=1, padding=(0, 1))


def _assert_max_pool_is_torch_exactly(torch, x_np, g, **kwargs):
    """max_pool2d's output (NaN and the sign of zeros included) and dL/dx for upstream gradient
    g are PyTorch's, bit for bit."""
    x = tinynet.tensor(x_np, requires_grad=True)
    out = F.max_pool2d(x, **kwargs)
    out.backward(g)
    tx = to_torch(torch, x_np, requires_grad=True)
    t_out = torch.nn.functional.max_pool2d(tx, **kwargs)
    t_out.backward(to_torch(torch, g))
    np.testing.assert_array_equal(out.data, t_out.detach().numpy())
    np.testing.assert_array_equal(np.signbit(out.data), np.signbit(t_out.detach().numpy()))
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())


def _special(seed, shape, dtype):
    """Values drawn from ties, NaN, signed zeros and infinities: every rule a window's winner
    follows (first of equal maxima, -0.0 against 0.0, last NaN, a window of -inf)."""
    values = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1.0, -1.0], dtype=dtype)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(len(values)))  # some planes all -inf, some full of NaN
    return rng.choice(values, size=shape, p=p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (5, 1), (2, 2), (2, 7), (3, 3), (6, 5)])
def test_max_pool_3x3_same_argmax_is_the_scan(dtype, height, width):
    """Inception's 3x3/1 pad-1 pool with a gradient (two separable passes, then the winners
    found from the maxima, over runs of several planes at once) records the same maxima, bit for
    bit, and the same window offsets as the row-by-row scan; without a gradient, the same
    maxima."""
    from tinynet.kernels import pool
    from tinynet.ops.pool import _sliding_windows

    planes = 3 * pool.PLANE_GROUPS + 5  # runs of 3 and 4 planes
    x = _special(height * width, (3, planes // 3, height, width), dtype)
    rows = _sliding_windows(height, 3, 1, 1, height, True)[:2]
    cols = _sliding_windows(width, 3, 1, 1, width, True)[:2]
    out, argmax = np.empty_like(x), np.empty(x.shape, dtype=np.int8)
    pool.max_pool2d_forward(x, out, argmax, rows, cols, 3, 1)
    same_out, same_argmax = np.empty_like(x), np.empty(x.shape, dtype=np.int8)
    pool.max_pool2d_3x3_same_argmax(x, same_out, same_argmax)
    np.testing.assert_array_equal(same_argmax, argmax)
    assert same_out.tobytes() == out.tobytes()  # -0.0 and NaN payloads included
    pool.max_pool2d_3x3_same(x, same_out)  # without argmax (evaluation)
    assert same_out.tobytes() == out.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("height, width", [(1, 1), (2, 2), (2, 7), (3, 3), (6, 5), (9, 11)])
@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_3x3_subsampled_is_the_scan(dtype, height, width, stride, padding, ceil_mode):
    """A 3x3 pool whose windows are the 3x3/1 pad-1 pool's around some pixels (GoogLeNet's
    3x3/2) records, from that pool's maxima, the same maxima bit for bit and the same window
    offsets as the row-by-row scan, with a gradient (``max_pool2d_3x3_subsampled``) and
    without (``max_pool2d_3x3_centred``); the other 3x3 pools have no such pixels."""
    from tinynet.kernels import pool
    from tinynet.ops.pool import _sliding_windows, pool_output_size

    x = _special(height * width + stride, (3, 40, height, width), dtype)
    out_size = [pool_output_size(n, 3, stride, padding, ceil_mode) for n in (height, width)]
    if min(out_size) <= 0:
        return  # the op refuses an input smaller than the kernel
    rows = _sliding_windows(height, 3, stride, padding, out_size[0], True)[:2]
    cols = _sliding_windows(width, 3, stride, padding, out_size[1], True)[:2]
    centres = pool._centres(rows, height), pool._centres(cols, width)
    if any(c is None for c in centres):
        assert stride == 3 or padding == 1  # 3x3/3 skips pixels; pad 1 may start in the padding
        return
    out, argmax = np.empty((3, 40, *out_size), dtype), np.empty((3, 40, *out_size), np.int8)
    pool.max_pool2d_forward(x, out, argmax, rows, cols, 3, stride)
    fast_out, fast_argmax = np.empty_like(out), np.empty_like(argmax)
    pool.max_pool2d_3x3_subsampled(x, fast_out, fast_argmax, *centres)
    np.testing.assert_array_equal(fast_argmax, argmax)
    assert fast_out.tobytes() == out.tobytes()
    fast_out[:] = 7
    pool.max_pool2d_3x3_centred(x, fast_out, *centres)  # without argmax (evaluation)
    assert fast_out.tobytes() == out.tobytes()


@pytest.mark.parametrize("with_grad", [False, True])
@pytest.mark.parametrize(
    "kwargs, kernel",
    [
        (dict(kernel_size=3, stride=1, padding=1), "3x3 same"),
        (dict(kernel_size=3, stride=1, padding=1, ceil_mode=True), "3x3 same"),
        (dict(kernel_size=3, stride=2, padding=1), "3x3 subsampled"),
        (dict(kernel_size=3, stride=2, ceil_mode=True), "3x3 subsampled"),
        (dict(kernel_size=3, stride=1), "3x3 subsampled"),
        (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), "general"),
        (dict(kernel_size=(3, 2), stride=1, padding=1), "general"),
    ],
)
def test_max_pool_kernel_is_chosen_by_shape_in_kernels(monkeypatch, kwargs, kernel, with_grad):
    """``kernels.pool.max_pool2d`` runs the separable 3x3 kernels for a 3x3/1 pool whose output
    keeps the input's size (Inception's pool branch; with argmax only when a gradient will be
    asked for), the subsampled 3x3 kernels for a 3x3 pool whose windows are that pool's around
    some pixels (the centred one without argmax; not where the last window starts in the
    padding: 6 rows, 3x3/2, padding 1, ceil mode) and the general scan for every other pool."""
    from tinynet.kernels import pool

    ran = []
    kernels = ("max_pool2d_forward", "max_pool2d_3x3_same", "max_pool2d_3x3_same_argmax")
    for name in (*kernels, "max_pool2d_3x3_subsampled", "max_pool2d_3x3_centred"):
        kernel_function = getattr(pool, name)
        monkeypatch.setattr(
            pool, name, lambda *a, f=kernel_function, n=name: (ran.append(n), f(*a))[1]
        )
    x = tinynet.tensor(uniform(0, (2, 3, 6, 7)), requires_grad=with_grad)
    F.max_pool2d(x, **kwargs)
    names = {
        "3x3 same": "max_pool2d_3x3_same_argmax" if with_grad else "max_pool2d_3x3_same",
        "3x3 subsampled": "max_pool2d_3x3_subsampled" if with_grad else "max_pool2d_3x3_centred",
        "general": "max_pool2d_forward",
    }
    assert ran == [names[kernel]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=2, ceil_mode=True),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, stride=2, ceil_mode=True),
    ],
)
@pytest.mark.parametrize("seed", range(4))
def test_max_pool_special_values_as_torch(torch, dtype, kwargs, seed):
    """GoogLeNet's pools on ties, NaN, ±0.0 and ±inf: PyTorch's outputs and gradients."""
    x_np = _special(seed, (2, 5, 9, 11), dtype)
    g = uniform(seed, F.max_pool2d(tinynet.tensor(x_np), **kwargs).shape, dtype=dtype)
    _assert_max_pool_is_torch_exactly(torch, x_np, g, **kwargs)


STEM_POOL = dict(kernel_size=3, stride=2, ceil_mode=True)
GOOGLENET_POOLS = {
    # name: (op, input (N, C, H, W), arguments), as torchvision's GoogLeNet uses them at 224x224
    "maxpool1 3x3/2 ceil": ("max_pool2d", (2, 3, 112, 112), STEM_POOL),
    "maxpool2 3x3/2 ceil": ("max_pool2d", (2, 3, 56, 56), STEM_POOL),
    "maxpool3 3x3/2 ceil": ("max_pool2d", (2, 3, 28, 28), STEM_POOL),
    "maxpool4 2x2/2 ceil": ("max_pool2d", (2, 3, 14, 14), dict(STEM_POOL, kernel_size=2)),
    "inception pool branch 3x3/1 pad 1": (
        "max_pool2d",
        (2, 3, 28, 28),
        dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
    ),
    "aux avgpool 5x5/3": ("avg_pool2d", (2, 3, 14, 14), dict(kernel_size=5, stride=3)),
    "aux adaptive 4x4": ("adaptive_avg_pool2d", (2, 3, 14, 14), dict(output_size=4)),
    "global adaptive 1x1": ("adaptive_avg_pool2d", (2, 3, 7, 7), dict(output_size=1)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool", GOOGLENET_POOLS)
def test_googlenet_pools_match_torch(torch, pool, dtype):
    name, shape, kwargs = GOOGLENET_POOLS[pool]
    _assert_matches_torch(torch, name, uniform(0, shape, dtype=dtype), 1, **kwargs)


@pytest.mark.parametrize("layout", GRAD_LAYOUTS)
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
        ("adaptive_avg_pool2d", dict(output_size=(2, 3))),
    ],
)
def test_any_input_and_gradient_layout(torch, name, kwargs, layout):
    _assert_matches_torch(torch, name, uniform(0, (3, 4, 7, 6)), 1, layout=layout, **kwargs)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_output_is_channel_major(name):
    out = getattr(F, name)(tinynet.tensor(uniform(0, (2, 3, 6, 6))), 2)
    assert is_channel_major(out.data)


# ----------------------------------------------------------------- (e) hand-computed values
def _row(values):
    """A one-row plane (1, 1, 1, W) that requires grad."""
    return tinynet.tensor(np.reshape(values, (1, 1, 1, -1)), dtype=np.float64, requires_grad=True)


def test_max_pool_2x2_on_a_4x4_plane():
    x = tinynet.tensor(np.arange(16.0).reshape(1, 1, 4, 4), requires_grad=True)
    y = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y.data, [[[[5.0, 7.0], [13.0, 15.0]]]])
    y.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_max_pool_overlapping_windows_sum_their_gradients():
    # windows [0, 3), [1, 4), [2, 5) of a row: 9 wins all three
    x = _row([1.0, 2.0, 9.0, 3.0, 4.0])
    y = F.max_pool2d(x, (1, 3), stride=1)
    np.testing.assert_array_equal(y.data.ravel(), [9.0, 9.0, 9.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.ravel(), [0.0, 0.0, 3.0, 0.0, 0.0])


def test_ceil_mode_adds_a_partial_window():
    # width 5, kernel 2, stride 2: floor mode [0, 2), [2, 4); ceil mode adds [4, 6) over x[4]
    x = _row([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(F.max_pool2d(x, (1, 2)).data.ravel(), [2.0, 4.0])
    y = F.max_pool2d(x, (1, 2), ceil_mode=True)
    np.testing.assert_array_equal(y.data.ravel(), [2.0, 4.0, 5.0])
    # the partial window's divisor is its length inside the (here unpadded) input: 5 / 1
    y = F.avg_pool2d(x, (1, 2), ceil_mode=True)
    np.testing.assert_array_equal(y.data.ravel(), [1.5, 3.5, 5.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.ravel(), [0.5, 0.5, 0.5, 0.5, 1.0])


def test_ceil_mode_drops_a_window_that_starts_in_the_right_padding():
    # width 3, padding 1, kernel 2, stride 2: windows [-1, 1), [1, 3); the ceil formula's third
    # window [3, 5) would lie wholly in the right padding, so it is dropped
    x = _row([1.0, 2.0, 3.0])
    kwargs = dict(kernel_size=(1, 2), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_array_equal(F.max_pool2d(x, **kwargs).data.ravel(), [1.0, 3.0])
    np.testing.assert_array_equal(F.avg_pool2d(x, **kwargs).data.ravel(), [0.5, 2.5])


def test_avg_pool_divisors_with_padding_and_ceil_mode():
    # width 4, kernel 3, stride 2, padding 1, ceil mode: windows [-1, 2), [1, 4), [3, 6)
    x = _row([1.0, 2.0, 3.0, 4.0])
    kwargs = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    # counting padding: the last window is clipped to the padded input [3, 5): (4 + 0) / 2
    y = F.avg_pool2d(x, **kwargs)
    np.testing.assert_array_equal(y.data.ravel(), [3.0 / 3, 9.0 / 3, 4.0 / 2])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.ravel(), [1 / 3, 2 / 3, 1 / 3, 1 / 3 + 1 / 2])
    # not counting it: only input elements divide
    y = F.avg_pool2d(x, count_include_pad=False, **kwargs)
    np.testing.assert_array_equal(y.data.ravel(), [3.0 / 2, 9.0 / 3, 4.0 / 1])


def test_adaptive_windows_overlap_when_the_size_does_not_divide():
    # 5 -> 3: windows [0, 2), [1, 4), [3, 5)
    x = _row([1.0, 2.0, 3.0, 4.0, 5.0])
    y = F.adaptive_avg_pool2d(x, (1, 3))
    np.testing.assert_array_equal(y.data.ravel(), [1.5, 3.0, 4.5])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.ravel(), [1 / 2, 1 / 2 + 1 / 3, 1 / 3, 1 / 3 + 1 / 2, 1 / 2])


def test_global_average_pool():
    x = tinynet.tensor(np.arange(8.0).reshape(1, 2, 2, 2), requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 1)
    np.testing.assert_array_equal(y.data.ravel(), [1.5, 5.5])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((1, 2, 2, 2), 0.25))


# ----------------------------------------------------------------- (f) errors
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
        (dict(kernel_size=(2, -1)), ValueError, "kernel_size must be >= 1"),
        (dict(kernel_size=2, stride=0), ValueError, "stride must be >= 1"),
        (dict(kernel_size=2, padding=-1), ValueError, "padding must be >= 0"),
        (dict(kernel_size=(3, 2), padding=(1, 2)), ValueError, "padding must be at most half"),
        (dict(kernel_size=(2, 2, 2)), TypeError, "kernel_size must be an int or a pair"),
        (dict(kernel_size=6, padding=1), ValueError, r"input size \(H, W\) = \(3, 4\) is too"),
    ],
)
def test_sliding_argument_errors(name, kwargs, error, match):
    with pytest.raises(error, match=f"{name}: {match}"):
        getattr(F, name)(tinynet.zeros(1, 1, 3, 4), **kwargs)


@pytest.mark.parametrize(
    "output_size, error",
    [
        (-1, ValueError),
        ((2, -3), ValueError),
        ((1, 2, 3), TypeError),
        ((2, "a"), TypeError),
        ((None, 1.5), TypeError),
    ],
)
def test_adaptive_output_size_errors(output_size, error):
    with pytest.raises(error, match="adaptive_avg_pool2d: output_size"):
        F.adaptive_avg_pool2d(tinynet.zeros(1, 1, 3, 4), output_size)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
@pytest.mark.parametrize(
    "x, error, match",
    [
        (tinynet.zeros(2, 3, 3), ValueError, r"input must be 4-D \(N, C, H, W\); got shape \(2, 3"),
        (tinynet.zeros(1, 1, 0, 3), ValueError, "input must have non-zero C, H and W"),
        (tinynet.tensor(np.zeros((1, 1, 3, 3), dtype=int)), TypeError, "input must be float32"),
    ],
)
def test_input_errors(name, x, error, match):
    with pytest.raises(error, match=f"{name}: {match}"):
        getattr(F, name)(x, 1)


def _three_training_steps():
    """Losses, weights and gradients after three SGD steps of the small GoogLeNet (its nine
    Inception pool branches and three 3x3/2 pools) on seeded batches of four 32x32 images."""
    from tinynet.models import googlenet_loss, googlenet_small
    from tinynet.optim import SGD

    tinynet.manual_seed(0)
    model = googlenet_small()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    data = np.random.default_rng(1)
    losses = []
    for _ in range(3):
        images = data.standard_normal((4, 3, 32, 32), dtype=np.float32)
        optimizer.zero_grad()
        loss = googlenet_loss(model(images), data.integers(0, 10, 4), 0.3)
        loss.backward()
        optimizer.step()
        losses.append(loss.data)
    grads = [p.grad for p in model.parameters()]
    return [*losses, *model.state_dict().values(), *grads]


def test_training_steps_are_the_general_scans_bit_for_bit(monkeypatch):
    """Three training steps with the max-pool kernels ``kernels.pool.max_pool2d`` picks by shape
    (the separable 3x3/1 kernels with their winners found from the maxima) give the losses,
    weights and gradients, bit for bit, of the same steps with every max pool run by the general
    row-by-row scan: ReLU's zeros make many ties, which must go where the scan sends them."""
    from tinynet.kernels import pool

    fast = _three_training_steps()

    def scan(x, out, y_windows, x_windows, kernel, stride, with_argmax):
        argmax = np.empty(out.shape if with_argmax else (0, 0, 0, 0), dtype=np.int8)
        pool.max_pool2d_forward(x, out, argmax, y_windows, x_windows, kernel[1], stride[1])
        return argmax

    monkeypatch.setattr(pool, "max_pool2d", scan)
    scanned = _three_training_steps()
    assert len(fast) == len(scanned)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(fast, scanned))
