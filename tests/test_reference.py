"""Every fused op equals its composed twin in tinynet.reference: forward and the gradient of every
input, in float64, over the arguments the op accepts (max-pool ties included); whole GoogLeNets
too; and the twins are built from primitives only."""

import ast
import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import reference
from tinynet.function import Function
from tinynet.models import GoogLeNet, GoogLeNetConfig, googlenet_loss
from tinynet.models.googlenet import PAPER, SMALL
from tinynet.testing.strategies import (
    adaptive_pool_cases,
    batch_norm_cases,
    classification_cases,
    conv_cases,
    linear_cases,
    lrn_cases,
    pool_cases,
    softmax_cases,
)

from compare import assert_close
from strategies import seeds, uniform


def _graph_functions(y):
    """The Function classes in the graph that made y."""
    seen, stack, functions = set(), [y], set()
    while stack:
        t = stack.pop()
        if t is None or id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        functions.add(t._ctx.fn)
        stack.extend(t._ctx.parents)
    return functions


def _run(op, arrays, seed, use_reference):
    """op on fresh leaves of ``arrays`` on one path: (output, the Functions of its graph, the
    input gradients for a seeded upstream gradient)."""
    leaves = [tinynet.tensor(a.copy(), requires_grad=True) for a in arrays]
    with tinynet.use_reference(use_reference):
        y = op(*leaves)
    functions = _graph_functions(y)
    y.backward(uniform(seed, y.shape))
    return y.data, functions, [leaf.grad for leaf in leaves]


def assert_twins(op, arrays, seed):
    """The fast and the reference path of op give the same output and input gradients, and the
    reference path ran primitives only."""
    fast, _, fast_grads = _run(op, arrays, seed, False)
    slow, slow_functions, slow_grads = _run(op, arrays, seed, True)
    assert_close(slow, fast)
    for slow_grad, fast_grad in zip(slow_grads, fast_grads):
        assert_close(slow_grad, fast_grad)
    assert slow_functions <= _primitives(), slow_functions - _primitives()


def _primitives():
    """The Functions of the primitive ops (one cheap call each)."""
    x = tinynet.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    ops = [
        x + x, x - x, x * x, x / x, -x, x**2.0, x.exp(), x.log(), x.sum(), x.mean(), x.max(),
        x.reshape(-1), x.permute(1, 0, 2, 3), x[:, :, :1], F.pad(x, (1, 1)), F.stack([x], 0),
        F.where(np.ones((2, 2), bool), x, 0), x.reshape(2, 2) @ x.reshape(2, 2),
    ]  # fmt: skip
    return {y._ctx.fn for y in ops}


def ties(seed, shape):
    """Small integers: many equal values in every window, and zeros for the ReLU."""
    return np.random.default_rng(seed).integers(-2, 3, shape).astype(np.float64)


# ------------------------------------------------------------------ convolution
@given(conv=conv_cases(max_batch=2, max_channels=3), seed=seeds)
def test_conv2d(conv, seed):
    arrays = [a for a in conv.arrays(seed) if a is not None]
    op = lambda *a: F.conv2d(*a, stride=conv.stride, padding=conv.padding)  # noqa: E731
    assert_twins(op, arrays, seed)


# ------------------------------------------------------------------ pooling
@given(pool=pool_cases(op="max_pool2d"), seed=seeds)
def test_max_pool2d_with_ties(pool, seed):
    assert_twins(lambda x: F.max_pool2d(x, **pool.kwargs), [ties(seed, pool.shape)], seed)


def test_relu_passes_nan_and_gives_it_no_gradient():
    x = np.array([np.nan, -np.inf, -1.0, 0.0, 2.0, np.inf])
    fast, _, (fast_grad,) = _run(F.relu, [x], 0, False)
    slow, _, (slow_grad,) = _run(F.relu, [x], 0, True)
    np.testing.assert_array_equal(slow, fast)
    np.testing.assert_array_equal(slow_grad, fast_grad)


def test_max_pool2d_ties_nan_and_infinity_go_to_the_same_tap():
    x = np.array([[[[1, 1, -np.inf, 0], [1, np.nan, np.nan, 1], [-np.inf] * 4, [2, 2, 0, 2]]]])
    for kwargs in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 1, "padding": 1}):
        fast, _, (fast_grad,) = _run(lambda x: F.max_pool2d(x, **kwargs), [x], 0, False)
        slow, _, (slow_grad,) = _run(lambda x: F.max_pool2d(x, **kwargs), [x], 0, True)
        np.testing.assert_array_equal(slow, fast)
        np.testing.assert_array_equal(slow_grad != 0, fast_grad != 0)  # the same winners
        assert_close(slow_grad, fast_grad)  # each a sum over the windows it won, in any order


@given(pool=pool_cases(op="avg_pool2d"), seed=seeds)
def test_avg_pool2d(pool, seed):
    assert_twins(lambda x: F.avg_pool2d(x, **pool.kwargs), [uniform(seed, pool.shape)], seed)


@given(case=adaptive_pool_cases(), seed=seeds)
def test_adaptive_avg_pool2d(case, seed):
    op = lambda x: F.adaptive_avg_pool2d(x, case.output_size)  # noqa: E731
    assert_twins(op, [uniform(seed, case.shape)], seed)


# ------------------------------------------------------------------ normalisation
@given(case=batch_norm_cases(max_channels=3), seed=seeds)
def test_batch_norm_and_its_running_statistics(case, seed):
    channels = case.shape[1]
    stats = {}

    def op(x, *affine):
        running = [uniform(seed + 3, (channels,)), uniform(seed + 4, (channels,), 0.5, 2.0)]
        stats[reference.is_reference_enabled()] = running
        running = running if case.running else [None, None]
        weight, bias = affine or (None, None)
        return F.batch_norm(x, *running, weight, bias, case.training, case.momentum, case.eps)

    arrays = [uniform(seed, case.shape)]
    if case.affine:
        arrays += [uniform(seed + 1, (channels,)), uniform(seed + 2, (channels,))]
    assert_twins(op, arrays, seed)
    for slow, fast in zip(stats[True], stats[False]):
        assert_close(slow, fast)


@given(case=lrn_cases(max_batch=2, max_channels=6, max_side=3), seed=seeds)
def test_local_response_norm(case, seed):
    op = lambda x: F.local_response_norm(x, case.size, case.alpha, case.beta, case.k)  # noqa: E731
    assert_twins(op, [uniform(seed, case.shape)], seed)


# ------------------------------------------------------------------ dense layers and losses
@given(case=linear_cases(max_lead=2), seed=seeds)
def test_linear(case, seed):
    assert_twins(F.linear, [a for a in case.arrays(seed) if a is not None], seed)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), seed=seeds)
def test_relu_with_zeros(shape, seed):
    assert_twins(F.relu, [ties(seed, shape)], seed)


@given(op=st.sampled_from([F.softmax, F.log_softmax]), case=softmax_cases(), seed=seeds)
def test_softmax_and_log_softmax(op, case, seed):
    assert_twins(lambda x: op(x, case.dim), [case.values(seed)], seed)


@given(
    case=classification_cases(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    as_tensor=st.booleans(),
    seed=seeds,
)
def test_cross_entropy(case, reduction, as_tensor, seed):
    target = case.target(seed)
    target = tinynet.tensor(target) if as_tensor else target
    op = lambda x: F.cross_entropy(x, target, reduction, case.label_smoothing)  # noqa: E731
    assert_twins(op, [case.logits(seed)], seed)


@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    p=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    training=st.booleans(),
    seed=seeds,
)
def test_dropout_draws_the_same_mask_from_the_same_generator(shape, p, training, seed):
    def op(x):
        return F.dropout(x * 1.0, p, training, np.random.default_rng(seed))

    assert_twins(op, [uniform(seed, shape)], seed)


@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    seed=seeds,
    data=st.data(),
)
def test_cat(shape, sizes, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    shapes = [shape[: dim % len(shape)] + (s,) + shape[dim % len(shape) + 1 :] for s in sizes]
    arrays = [uniform(seed + i, s) for i, s in enumerate(shapes)]
    assert_twins(lambda *xs: F.cat(xs, dim), arrays, seed)


# ------------------------------------------------------------------ whole networks
NETWORKS = {
    # The paper's aux heads pool 5x5/3 and so need 224x224 images; here they pool adaptively.
    "paper-32": (GoogLeNetConfig(**{**PAPER.__dict__, "aux_pool": "adaptive4x4"}), 32),
    "small-16": (SMALL, 16),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_googlenet_eval_and_training_step_on_both_paths(name):
    """Eval logits, then a training step with dropout on (the same generator state on both
    paths): outputs, every parameter's gradient and BatchNorm's running statistics. Each network
    at the smallest images it trains on with a batch of one."""
    config, size = NETWORKS[name]
    tinynet.manual_seed(0)
    model = GoogLeNet(GoogLeNetConfig(**{**config.__dict__, "num_classes": 10})).double()
    x, target = uniform(1, (1, 3, size, size), 0, 1), np.array([3])
    start = model.state_dict()
    paths = {}
    for use_reference in (False, True):
        model.load_state_dict(start)
        model.zero_grad()
        with tinynet.use_reference(use_reference):
            model.eval()
            logits = model(x).data
            model.train()
            tinynet.manual_seed(1)
            outputs = model(x)
            loss = googlenet_loss(outputs, target)
        if use_reference:
            assert _graph_functions(loss) <= _primitives()  # every layer ran its twin
        loss.backward()
        grads = {key: p.grad for key, p in model.named_parameters()}
        buffers = {key: np.array(b) for key, b in model.named_buffers()}
        paths[use_reference] = logits, [o.data for o in outputs], grads, buffers
    (logits, outputs, grads, buffers), (r_logits, r_outputs, r_grads, r_buffers) = paths.values()
    assert_close(r_logits, logits)
    for r_out, out in zip(r_outputs, outputs):
        assert_close(r_out, out)
    assert grads.keys() == r_grads.keys()
    for key, grad in grads.items():
        assert_close(r_grads[key], grad, scale=float(np.abs(grad).max()))
    for key, buffer in buffers.items():
        assert_close(r_buffers[key], buffer, dtype=np.float64)


# ------------------------------------------------------------------ what the twins are made of
FUSED = [
    "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
    "local_response_norm", "linear", "relu", "softmax", "log_softmax", "cross_entropy",
    "dropout", "cat",
]  # fmt: skip


def test_every_fused_op_has_a_twin_with_its_signature():
    for name in FUSED:
        fast = inspect.unwrap(getattr(F, name))
        assert getattr(F, name) is not fast, f"F.{name} does not dispatch"
        twin = inspect.signature(getattr(reference, name)).parameters.values()
        expected = inspect.signature(fast).parameters.values()
        assert [(p.name, p.default) for p in twin] == [(p.name, p.default) for p in expected]


def test_reference_uses_primitives_only():
    """No numba, nothing from tinynet.kernels, no Function of its own, no fused op."""
    tree = ast.parse(inspect.getsource(reference))
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom):
            imported.update({alias.name: node.module for alias in node.names})
    modules = set(imported.values())
    assert not {m for m in modules if "kernels" in m or "numba" in m}, modules
    assert not set(imported) & set(FUSED), set(imported) & set(FUSED)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for name, value in vars(reference).items():
        assert not (inspect.isclass(value) and issubclass(value, Function)), name
        if inspect.isfunction(value) and value.__module__ != reference.__name__:
            assert value.__name__ not in FUSED, name


def test_use_reference_nests_and_restores_after_an_exception():
    assert not reference.is_reference_enabled()
    with tinynet.use_reference():
        with tinynet.use_reference(False):
            assert not reference.is_reference_enabled()
        assert reference.is_reference_enabled()
        with pytest.raises(ZeroDivisionError), tinynet.use_reference():
            1 / 0
        assert reference.is_reference_enabled()
    assert not reference.is_reference_enabled()


def test_use_reference_is_per_thread():
    import threading

    seen = []
    with tinynet.use_reference():
        thread = threading.Thread(target=lambda: seen.append(reference.is_reference_enabled()))
        thread.start()
        thread.join()
    assert seen == [False]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: F.conv2d(x, np.ones((1, 1, 5, 5))), "conv2d: kernel size .5, 5. of weight"),
        (lambda x: F.conv2d(x, np.ones((1, 1, 1, 1)), stride=0), "conv2d: stride must be >= 1"),
        (lambda x: F.max_pool2d(x, 2, padding=2), "max_pool2d: padding must be at most half"),
        (lambda x: F.avg_pool2d(x, 5), "avg_pool2d: input size .H, W. = .3, 3. is too small"),
        (lambda x: F.cross_entropy(x[0, 0], [0, 3, 0]), r"class indices in \[0, 3\)"),
        (lambda x: F.cross_entropy(x[0, 0], [0, -1, 0]), r"class indices in \[0, 3\)"),
        (lambda x: F.cross_entropy(x[0, 0], [0, 1, 0], "avg"), "reduction 'avg'"),
        (lambda x: F.dropout(x, 1.5), r"dropout: p must be a probability in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_clear_errors_on_the_reference_path(call, match):
    with tinynet.use_reference(), pytest.raises((ValueError, TypeError), match=match):
        call(tinynet.tensor(np.ones((1, 1, 3, 3))))
