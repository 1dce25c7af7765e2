"""local_response_norm and batch_norm: shapes, forward against tinynet.reference,
finite-difference gradients, PyTorch parity (values, gradients, running statistics),
hand-computed examples, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import reference
from tinynet.kernels.lrn import PIXEL_TILE
from tinynet.testing.strategies import batch_norm_cases, lrn_cases

from compare import assert_close, to_torch
from strategies import distinct, grad_layouts, is_channel_major, laid_out, layouts, seeds, uniform

# ---------------------------------------------------------------- helpers


def bn_inputs(seed, shape, dtype=np.float64):
    """x with a per-channel offset (so centring matters), weight, bias, running mean and var."""
    c = (shape[1],)
    offset = uniform(seed, c, -3.0, 3.0, dtype).reshape((1, -1) + (1,) * (len(shape) - 2))
    x = uniform(seed + 1, shape, dtype=dtype) + offset
    weight, bias = uniform(seed + 2, c, dtype=dtype), uniform(seed + 3, c, dtype=dtype)
    return x, weight, bias, uniform(seed + 4, c, dtype=dtype), uniform(seed + 5, c, 0.5, 2.0, dtype)


def bn_arguments(case, seed, dtype=np.float64):
    """x and (running_mean, running_var, weight, bias) from bn_inputs for a call as ``case``
    makes it: None for the arguments it leaves out."""
    x, weight, bias, mean, var = bn_inputs(seed, case.shape, dtype)
    running = (mean, var) if case.running else (None, None)
    return x, running + ((weight, bias) if case.affine else (None, None))


# ---------------------------------------------------------------- (a) shapes and layout


@given(case=lrn_cases(), layout=layouts, seed=seeds)
def test_lrn_keeps_the_shape_and_returns_channel_major(case, layout, seed):
    shape, size, alpha, beta, k = case
    y = F.local_response_norm(laid_out(uniform(seed, shape), layout), size, alpha, beta, k)
    assert y.shape == shape
    assert is_channel_major(y.data)


@given(case=batch_norm_cases(), layout=layouts, seed=seeds)
def test_batch_norm_keeps_the_shape(case, layout, seed):
    x, args = bn_arguments(case, seed)
    y = F.batch_norm(laid_out(x, layout), *args, case.training, case.momentum, case.eps)
    assert y.shape == case.shape
    if len(case.shape) == 4:
        assert is_channel_major(y.data)


# ---------------------------------------------------------------- (b) against the reference


@given(case=lrn_cases(), layout=layouts, seed=seeds)
def test_lrn_matches_the_definition(case, layout, seed):
    shape, size, alpha, beta, k = case
    x = uniform(seed, shape)
    assert_close(
        F.local_response_norm(laid_out(x, layout), size, alpha, beta, k),
        reference.local_response_norm(x, size, alpha, beta, k).data,
    )


@pytest.mark.parametrize("size, beta", [(5, 0.75), (4, 0.6)])
def test_lrn_matches_the_reference_across_pixel_tiles(size, beta):
    """The kernels cut the N·H·W pixels into tiles of PIXEL_TILE: here two and a half tiles,
    the last one short. Values and gradients still match the composed twin's."""
    width = PIXEL_TILE + PIXEL_TILE // 4
    x_np = uniform(0, (2, 7, 1, width), -2.0, 2.0)
    upstream = uniform(1, x_np.shape, -1.0, 1.0)
    results = []
    for op in (F.local_response_norm, reference.local_response_norm):
        x = tinynet.tensor(x_np, requires_grad=True)
        y = op(x, size, alpha=0.5, beta=beta, k=1.5)
        (y * upstream).sum().backward()
        results.append((y.data, x.grad))
    (y, grad), (y_twin, grad_twin) = results
    assert_close(y, y_twin)
    assert_close(grad, grad_twin)


@given(case=batch_norm_cases(), layout=layouts, seed=seeds)
def test_batch_norm_matches_the_definition(case, layout, seed):
    """The output, and the running statistics each path updates in place."""
    x, (mean, var, weight, bias) = bn_arguments(case, seed)
    settings = case.training, case.momentum, case.eps
    twin_stats = (mean.copy(), var.copy()) if case.running else (None, None)
    expected = reference.batch_norm(x, *twin_stats, weight, bias, *settings)
    y = F.batch_norm(laid_out(x, layout), mean, var, weight, bias, *settings)
    assert_close(y, expected.data)
    if case.running:
        assert_close(mean, twin_stats[0])
        assert_close(var, twin_stats[1])


# ---------------------------------------------------------------- (c) finite differences


@given(case=lrn_cases(), seed=seeds)
def test_lrn_gradcheck(case, seed):
    shape, size, alpha, beta, k = case
    x = tinynet.tensor(uniform(seed, shape), requires_grad=True)
    assert tinynet.gradcheck(
        lambda x: F.local_response_norm(x, size, alpha, beta, k), [x], atol=1e-8, rtol=1e-6
    )


@given(case=batch_norm_cases(min_eps=1e-3), seed=seeds)
def test_batch_norm_gradcheck(case, seed):
    _, (mean, var, weight, bias) = bn_arguments(case, seed)
    # Distinct values: no channel's variance is near 0, where x̂ bends too sharply to difference.
    x = tinynet.tensor(distinct(seed, case.shape, gap=0.25), requires_grad=True)
    params = [tinynet.tensor(p, requires_grad=True) for p in (weight, bias) if p is not None]
    inputs = [x] + params

    def fn(x, weight=None, bias=None):
        # Fresh running statistics each call: training updates them, and fn must be deterministic.
        stats = (mean.copy(), var.copy()) if case.running else (None, None)
        return F.batch_norm(x, *stats, weight, bias, case.training, case.momentum, case.eps)

    assert tinynet.gradcheck(fn, inputs, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------- (d) PyTorch parity


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=lrn_cases(), layout=layouts, grad_layout=grad_layouts, seed=seeds)
def test_lrn_matches_torch(torch, dtype, case, layout, grad_layout, seed):
    shape, size, alpha, beta, k = case
    x_np, g = uniform(seed, shape, dtype=dtype), uniform(seed + 1, shape, dtype=dtype)
    x = tinynet.tensor(laid_out(x_np, layout), requires_grad=True)
    tx = to_torch(torch, x_np, True)
    y = F.local_response_norm(x, size, alpha, beta, k)
    t_y = torch.nn.functional.local_response_norm(tx, size, alpha, beta, k)
    y.backward(laid_out(g, grad_layout))
    t_y.backward(to_torch(torch, laid_out(g, grad_layout)))
    assert_close(y, t_y.detach().numpy())
    assert_close(x.grad, tx.grad.numpy(), scale=np.abs(tx.grad.numpy()).max())
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_googlenet_lrn_matches_torch(torch, dtype):
    """The stem's LRN(5, 1e-4, 0.75, 1.0) on ReLU-like activations large enough for the
    normalisation to matter, with the gradient in plain NCHW layout."""
    shape = (2, 64, 5, 6)
    x_np, g = uniform(0, shape, 0.0, 100.0, dtype), uniform(1, shape, dtype=dtype)
    x = tinynet.tensor(laid_out(x_np, "channel_major"), requires_grad=True)
    tx = to_torch(torch, x_np, True)
    y = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    t_y = torch.nn.functional.local_response_norm(tx, 5, 1e-4, 0.75, 1.0)
    assert np.abs(y.data - x_np).max() > 10  # the normalisation is not a near-identity here
    y.backward(g)
    t_y.backward(to_torch(torch, g))
    assert_close(y, t_y.detach().numpy())
    assert_close(x.grad, tx.grad.numpy(), scale=np.abs(tx.grad.numpy()).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(
    case=batch_norm_cases(training=True, running=True),
    layout=layouts,
    grad_layout=grad_layouts,
    seed=seeds,
)
def test_batch_norm_matches_torch_over_training_steps(
    torch, dtype, case, layout, grad_layout, seed
):
    """Three training steps on fresh batches, then evaluation with the running statistics."""
    shape, affine, momentum, eps = case.shape, case.affine, case.momentum, case.eps
    _, weight_np, bias_np, mean, var = bn_inputs(seed, shape, dtype)
    t_mean, t_var = to_torch(torch, mean), to_torch(torch, var)
    for step, training in enumerate([True, True, True, False]):
        x_np = bn_inputs(seed + 10 * step, shape, dtype)[0]
        g = uniform(seed + 10 * step + 9, shape, dtype=dtype)
        x = tinynet.tensor(laid_out(x_np, layout), requires_grad=True)
        tx = to_torch(torch, x_np, True)
        weight = tinynet.tensor(weight_np, requires_grad=True) if affine else None
        bias = tinynet.tensor(bias_np, requires_grad=True) if affine else None
        t_weight = to_torch(torch, weight_np, True) if affine else None
        t_bias = to_torch(torch, bias_np, True) if affine else None
        y = F.batch_norm(x, mean, var, weight, bias, training, momentum, eps)
        t_y = torch.nn.functional.batch_norm(
            tx, t_mean, t_var, t_weight, t_bias, training, momentum, eps
        )
        y.backward(laid_out(g, grad_layout))
        t_y.backward(to_torch(torch, laid_out(g, grad_layout)))
        assert_close(y, t_y.detach().numpy(), scale=np.abs(t_y.detach().numpy()).max())
        assert_close(mean, t_mean.numpy())
        assert_close(var, t_var.numpy())
        pairs = [(x.grad, tx.grad)] + (
            [(weight.grad, t_weight.grad), (bias.grad, t_bias.grad)] if affine else []
        )
        for ours, theirs in pairs:
            assert ours.dtype == dtype
            assert_close(ours, theirs.numpy(), scale=np.abs(theirs.numpy()).max())


def test_batch_norm_without_running_stats_matches_torch(torch):
    x_np = bn_inputs(0, (4, 3, 2, 2))[0]
    y = F.batch_norm(x_np, None, None, training=True)
    assert_close(
        y, torch.nn.functional.batch_norm(to_torch(torch, x_np), None, None, training=True).numpy()
    )


@pytest.mark.parametrize("layout", ["channel_major", "nchw", "strided", "2-d"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_kernels_float32_follow_float64(layout, training):
    """The numba forward and backward on every memory layout: float32 results equal float64's
    to float32 accuracy and keep their dtype; the output of a strided (non-dense) view too."""
    shape = (2, 3) if layout == "2-d" else (4, 3, 5, 6)
    x64, weight, bias, mean, var = bn_inputs(7, shape)
    g64 = uniform(8, shape)
    results = {}
    for dtype in (np.float64, np.float32):
        x_np, g = x64.astype(dtype), g64.astype(dtype)
        if layout == "strided":  # every other column of a wider array: no dense order
            wide = np.zeros(shape[:3] + (2 * shape[3],), dtype)
            wide[..., ::2] = x_np
            x_np = wide[..., ::2]
        elif layout != "2-d":
            x_np = laid_out(x_np, layout)
        x = tinynet.tensor(x_np, requires_grad=True)
        w, b = (tinynet.tensor(v.astype(dtype), requires_grad=True) for v in (weight, bias))
        y = F.batch_norm(x, mean.astype(dtype), var.astype(dtype), w, b, training, 0.1, 1e-3)
        y.backward(g)
        results[dtype] = [y.data, x.grad, w.grad, b.grad]
        assert all(r.dtype == dtype for r in results[dtype])
    for ours, wanted in zip(results[np.float32], results[np.float64]):
        assert_close(ours, wanted, np.float32, scale=np.abs(wanted).max())


def test_batch_norm_backward_without_the_input_gradient():
    """Only weight and bias want gradients (a frozen input): the kernel skips dL/dx."""
    x_np, weight, bias, mean, var = bn_inputs(3, (4, 2, 3, 3))
    w, b = tinynet.tensor(weight, requires_grad=True), tinynet.tensor(bias, requires_grad=True)
    x = tinynet.tensor(x_np)
    F.batch_norm(x, mean, var, w, b, training=True).sum().backward()
    x_hat = (x_np - x_np.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x_np.var(axis=(0, 2, 3), keepdims=True) + 1e-5
    )
    assert x.grad is None
    assert_close(w.grad, x_hat.sum(axis=(0, 2, 3)))
    assert_close(b.grad, np.full(2, 4 * 3 * 3.0))


def test_batch_norm_of_float16_runs_in_float64_and_keeps_the_dtype():
    x_np, weight, bias, mean, var = bn_inputs(5, (3, 2, 2, 2))
    x = tinynet.tensor(x_np.astype(np.float16), requires_grad=True)
    y = F.batch_norm(x, mean.copy(), var.copy(), weight, bias, training=True)
    y.backward(np.ones(y.shape, np.float16))
    assert y.dtype == np.float16 and x.grad.dtype == np.float16
    x64 = x_np.astype(np.float16).astype(np.float64)
    expected = reference.batch_norm(x64, mean, var, weight, bias, training=True).data
    np.testing.assert_allclose(y.data, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(x.grad, 0.0, atol=2e-2)  # a shift of x changes nothing


# ---------------------------------------------------------------- (e) hand-computed examples


def test_lrn_hand_computed():
    """Two channels, size 2: window(0) = {-1, 0} (the front padding) and window(1) = {0, 1}.
    With alpha 2, beta 1, k 1: S_0 = 1 + x_0² = 2, S_1 = 1 + x_0² + x_1² = 6, so y = (1/2, 2/6).
    y_0 = x_0 / (1 + x_0²) has slope 0 at x_0 = 1 and ignores x_1;
    y_1 = x_1 / (1 + x_0² + x_1²): dy_1/dx_0 = -2 x_0 x_1 / 36 = -1/9,
    dy_1/dx_1 = (6 - 8) / 36 = -1/18."""
    x = tinynet.tensor(np.array([1.0, 2.0]).reshape(1, 2, 1, 1), requires_grad=True)
    y = F.local_response_norm(x, 2, alpha=2.0, beta=1.0, k=1.0)
    np.testing.assert_allclose(y.data.ravel(), [1 / 2, 1 / 3])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.ravel(), [-1 / 9, -1 / 18])


def test_lrn_of_size_one_is_pointwise():
    """size 1: y = x / (k + alpha x²)^beta; with x = 2, alpha 0.75, k 1, beta 0.5: 2 / 2."""
    y = F.local_response_norm(np.full((1, 3, 2, 2), 2.0), 1, alpha=0.75, beta=0.5, k=1.0)
    np.testing.assert_allclose(y.data, 1.0)


def test_batch_norm_training_hand_computed():
    """x = (0, 2): mean 1, biased variance 1; eps 0.44 makes σ = 1.2, so x̂ = ∓5/6, and γ = 3,
    β = 1 give (-1.5, 3.5). The running statistics move 10% towards mean 1 and the unbiased
    variance 2: 0.9·0 + 0.1·1 = 0.1 and 0.9·1 + 0.1·2 = 1.1. The gradient of Σ y is 0 for x
    (a shift of x changes nothing), Σ x̂ = 0 for γ and m = 2 for β."""
    x = tinynet.tensor(np.array([[0.0], [2.0]]), requires_grad=True)
    weight = tinynet.tensor(np.array([3.0]), requires_grad=True)
    bias = tinynet.tensor(np.array([1.0]), requires_grad=True)
    mean, var = tinynet.tensor(np.zeros(1)), tinynet.tensor(np.ones(1))
    y = F.batch_norm(x, mean, var, weight, bias, training=True, momentum=0.1, eps=0.44)
    np.testing.assert_allclose(y.data.ravel(), [-1.5, 3.5])
    np.testing.assert_allclose([mean.data[0], var.data[0]], [0.1, 1.1])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.ravel(), [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose([weight.grad[0], bias.grad[0]], [0.0, 2.0], atol=1e-15)


def test_batch_norm_eval_hand_computed():
    """Running mean 1, variance 3, eps 1: σ = 2; x = (5, -3) -> x̂ = (2, -2), then ·0.5 - 1.
    dy/dx = γ/σ = 1/4, and the running statistics stay put."""
    x = tinynet.tensor(np.array([[5.0], [-3.0]]), requires_grad=True)
    mean, var = np.array([1.0]), np.array([3.0])
    y = F.batch_norm(x, mean, var, np.array([0.5]), np.array([-1.0]), eps=1.0)
    np.testing.assert_allclose(y.data.ravel(), [0.0, -2.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.ravel(), [0.25, 0.25])
    assert mean[0] == 1.0 and var[0] == 3.0


def test_batch_norm_updates_running_stats_without_grad():
    mean, var = np.zeros(2, np.float32), np.ones(2, np.float32)
    with tinynet.no_grad():
        F.batch_norm(
            np.array([[1.0, 2.0], [3.0, 6.0]], np.float32), mean, var, training=True, momentum=1.0
        )
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(var, [2.0, 8.0])


@given(
    shape=st.tuples(
        st.integers(1, 4), st.integers(1, 5), st.integers(1, 40), st.integers(1, 40)
    ).filter(lambda s: s[0] * s[2] * s[3] > 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=seeds,
)
def test_batch_norm_statistics_are_numpy_s_mean_and_var_bit_for_bit(shape, dtype, seed):
    # The float32 GoogLeNet matches PyTorch's near-ties only with NumPy's rounding of the batch
    # statistics; the op computes them in fewer passes, so it must round the same. momentum=1
    # makes the running statistics the batch's own: μ, and v·m/(m-1).
    x, *_ = bn_inputs(seed, shape, dtype)
    x = laid_out(x * 37.0, "channel_major")
    mean, var = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    with tinynet.no_grad():
        F.batch_norm(x, mean, var, training=True, momentum=1.0)
    m = shape[0] * shape[2] * shape[3]
    rows = x.transpose(1, 0, 2, 3).reshape(shape[1], m)
    np.testing.assert_array_equal(mean, rows.mean(axis=1))
    np.testing.assert_array_equal(var, rows.var(axis=1) * (m / (m - 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_statistics_round_as_numpy_at_every_length(dtype):
    # NumPy sums up to 7 values in order, up to 128 in eight running sums and splits longer
    # rows in two: lengths at and around each boundary, and rows summing to -0.0.
    rng = np.random.default_rng(5)
    for m in [2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 135, 136, 137, 255, 256, 257, 1000, 4099]:
        rows = (rng.standard_normal((3, m)) * 37.0 + 5.0).astype(dtype)
        rows[2] = -0.0
        mean, var = np.zeros(3, dtype), np.ones(3, dtype)
        with tinynet.no_grad():
            F.batch_norm(rows.reshape(1, 3, 1, m), mean, var, training=True, momentum=1.0)
        np.testing.assert_array_equal(mean, rows.mean(axis=1), err_msg=f"m={m}")
        assert not np.signbit(mean[2])  # NumPy's sum starts from +0.0
        np.testing.assert_array_equal(var, rows.var(axis=1) * (m / (m - 1)), err_msg=f"m={m}")


# ---------------------------------------------------------------- (f) errors


def test_lrn_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r"local_response_norm: input must be 4-D"):
        F.local_response_norm(np.zeros((2, 3, 4)), 5)


@pytest.mark.parametrize("size", [0, -2])
def test_lrn_rejects_size_below_one(size):
    with pytest.raises(ValueError, match=rf"local_response_norm: size must be >= 1.*got {size}"):
        F.local_response_norm(np.zeros((1, 3, 2, 2)), size)


def test_lrn_rejects_non_integer_size():
    with pytest.raises(TypeError, match=r"local_response_norm: size must be an int"):
        F.local_response_norm(np.zeros((1, 3, 2, 2)), 2.5)


@pytest.mark.parametrize(
    "op",
    [lambda x: F.local_response_norm(x, 3), lambda x: F.batch_norm(x, None, None, training=True)],
)
def test_norms_reject_integer_input(op):
    with pytest.raises(TypeError, match=r"input must be a floating-point tensor"):
        op(np.ones((2, 3, 2, 2), dtype=np.int64))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_batch_norm_rejects_other_ranks(shape):
    with pytest.raises(ValueError, match=r"batch_norm: input must be 2-D or 4-D"):
        F.batch_norm(np.zeros(shape), None, None, training=True)


@pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
def test_batch_norm_rejects_per_channel_arguments_of_the_wrong_shape(name):
    args = {
        "running_mean": np.zeros(3),
        "running_var": np.ones(3),
        "weight": np.ones(3),
        "bias": np.zeros(3),
    }
    args[name] = np.ones(4)
    expected = rf"batch_norm: {name} must have shape \(C,\) = \(3,\).*got \(4,\)"
    with pytest.raises(ValueError, match=expected):
        F.batch_norm(np.zeros((2, 3, 2, 2)), **args, training=True)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_batch_norm_rejects_one_value_per_channel_when_training(shape):
    expected = r"batch_norm: Expected more than 1 value per channel when training"
    with pytest.raises(ValueError, match=expected):
        F.batch_norm(np.zeros(shape), np.zeros(3), np.ones(3), training=True)
    F.batch_norm(np.zeros(shape), np.zeros(3), np.ones(3), training=False)  # fine in evaluation


def test_batch_norm_needs_running_stats_in_evaluation():
    expected = r"batch_norm: running_mean and running_var are required when training=False"
    with pytest.raises(ValueError, match=expected):
        F.batch_norm(np.zeros((2, 3)), None, None, training=False)


def test_batch_norm_needs_both_running_stats_or_neither():
    expected = r"batch_norm: running_mean and running_var must both.*running_var=None"
    with pytest.raises(ValueError, match=expected):
        F.batch_norm(np.zeros((2, 3)), np.zeros(3), None, training=True)


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_batch_norm_rejects_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match=r"batch_norm: momentum must be in \[0, 1\]"):
        F.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), training=True, momentum=momentum)


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_batch_norm_rejects_non_positive_eps(eps):
    with pytest.raises(ValueError, match=r"batch_norm: eps must be > 0"):
        F.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(3), eps=eps)
