"""tinynet.inference: a plan gives the eager eval outputs on every registered network, leaves the
model alone, checks its input; each rewrite alone is exact."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import nn
from tinynet.function import no_grad
from tinynet.inference.program import arena_offsets
from tinynet.kernels.activation import add_bias, relu
from tinynet.kernels.epilogue import bias_relu
from tinynet.models.registry import MODELS


def _randomise_statistics(model, rng) -> None:
    """Running statistics far from (0, 1), so folding BatchNorm changes the weights."""
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer[...] = rng.normal(0, 0.2, buffer.shape)
        elif name.endswith("running_var"):
            buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)


def _eager(model, x):
    with no_grad():
        return model.eval()(x).data


def _relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _input_size(name: str) -> int:
    if name.endswith("small"):
        return 32
    return 40 if name in ("paper", "torchvision") else 75


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_equals_eager_on_every_network(name):
    rng = np.random.default_rng(0)
    options = {} if name.endswith("small") else {"width": 0.25}
    model = MODELS[name].build(num_classes=10, **options)
    _randomise_statistics(model, rng)
    size = _input_size(name)
    x = rng.random((2, 3, size, size))
    # float32: within float32 rounding (the folded weights round differently)
    x32 = x.astype(np.float32)
    plan = tinynet.inference(model, x32)
    assert _relative_error(plan(x32).data, _eager(model, x32)) < 2e-5
    # float64: tight, so every rewrite is exact in real arithmetic; and a second batch size
    model.to(np.float64)
    plan = tinynet.inference(model, x)
    for batch in (x, x[:1], x[:1], x):
        out = plan(batch)
        assert not out.requires_grad
        assert _relative_error(out.data, _eager(model, batch)) < 1e-10


def test_plan_rewrites_googlenet_inception_block():
    model = MODELS["small"].build()
    plan = tinynet.inference(model, np.zeros((2, 3, 32, 32), np.float32))
    steps = [op for op in plan.ops if "inception3a" in op.scope]
    # 4 convs + stacked 1x1 + 2 row views + pool + concat; no BatchNorm, ReLU left
    assert [op.op for op in steps].count("Conv2d") == 5
    assert not {"BatchNorm", "ReLU"} & {op.op for op in plan.ops}
    text = plan.describe("inception3a")
    assert "20 traced ops" in text and "9 planned steps" in text
    assert "writes channels 0:16 of" in text
    with pytest.raises(ValueError, match="no op ran in a module named 'nope'"):
        plan.describe("nope")


def test_plan_snapshots_weights_and_leaves_the_model_alone():
    rng = np.random.default_rng(1)
    model = MODELS["small"].build()
    _randomise_statistics(model, rng)
    model.train()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    plan = tinynet.inference(model, x)
    first = plan(x).data
    assert model.training
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    model.conv1.conv.weight.data[...] = 0  # the plan keeps the weights it was made with
    np.testing.assert_array_equal(plan(x).data, first)
    # outputs are fresh arrays: the next call does not overwrite them
    a, b = plan(x).data, plan(x * 2).data
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, first)


def test_plan_checks_its_input():
    plan = tinynet.inference(MODELS["small"].build(), np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"x must have 3 channels .* got shape \(2, 1, 32, 32\)"):
        plan(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"x must have 4 dimensions .* got shape \(3, 32, 32\)"):
        plan(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="x has dtype float64 but the plan was made for float32"):
        plan(np.zeros((2, 3, 32, 32)))
    with pytest.raises(TypeError, match="model must be a tinynet Module"):
        tinynet.inference(lambda x: x, np.zeros((1, 3, 8, 8)))


class _TwoHeads(nn.Module):
    """Returns a namedtuple with a None item, through ops the plan runs by their Function."""

    Out = namedtuple("Out", "main skipped extra")

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        z = F.relu(y * 2.0 + y)  # the conv feeds two readers: no ReLU fused into it
        pooled = F.max_pool2d(z, 3, stride=2, padding=1, ceil_mode=True)
        return self.Out(self.fc(F.flatten(F.adaptive_avg_pool2d(pooled, 1), 1)), None, pooled)


def test_plan_keeps_the_output_structure_and_runs_any_op():
    model = _TwoHeads().to(np.float64)
    x = np.random.default_rng(2).random((2, 3, 9, 9))
    plan = tinynet.inference(model, x)
    out, want = plan(x), None
    with no_grad():
        want = model.eval()(x)
    assert type(out) is _TwoHeads.Out and out.skipped is None
    for got, expected in ((out.main, want.main), (out.extra, want.extra)):
        np.testing.assert_allclose(got.data, expected.data, rtol=1e-12, atol=1e-12)
    ops = [op.op for op in plan.ops]
    assert ops.index("MaxPool2d") < ops.index("ReLU")  # the ReLU moved after the pool


# ------------------------------------------------------------------ each rewrite alone
class _ConvBn(nn.Module):
    def __init__(self, bias, pool):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(5)
        self.pool = pool

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.max_pool2d(F.relu(y * 1.0), *self.pool) if self.pool else F.relu(y)


@given(
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
    pool=st.sampled_from(
        [None, (2, 2, 0, False), (3, 2, 1, True), (3, 2, 0, True), (2, 3, 1, True)]
    ),
    passes=st.sampled_from([("fold_batch_norm",), ("fuse_relu",), ("relu_after_max_pool",), None]),
)
def test_each_rewrite_alone_is_exact(bias, seed, pool, passes):
    """BatchNorm folded, ReLU fused, ReLU after max pool (ceil_mode and padding: the windows
    clipped at the edge), each alone and all together, in float64 against eager."""
    rng = np.random.default_rng(seed)
    model = _ConvBn(bias, pool).to(np.float64)
    _randomise_statistics(model, rng)
    model.bn.weight.data[...] = rng.normal(size=5)
    x = rng.normal(size=(2, 3, 7, 8))
    plan = tinynet.inference(model, x, passes=passes)
    np.testing.assert_allclose(plan(x).data, _eager(model, x), rtol=1e-10, atol=1e-12)


class _SharedInput(nn.Module):
    """Three 1x1 convolutions of one input (two stacked, one writing into the concat) and a
    nested concatenation."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 5, 1)
        self.d = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        inner = F.cat([F.relu(self.a(x)), self.d(F.relu(self.b(x)))], dim=1)
        return F.cat([inner, F.relu(self.c(x)), F.max_pool2d(x, 3, 1, 1)], dim=1)


@pytest.mark.parametrize("passes", [("stack_pointwise",), ("stack_pointwise", "fuse_relu"), ()])
def test_stacked_pointwise_and_concat_in_place(passes):
    model = _SharedInput().to(np.float64)
    x = np.random.default_rng(3).normal(size=(2, 4, 5, 6))
    plan = tinynet.inference(model, x, passes=passes)
    np.testing.assert_allclose(plan(x).data, _eager(model, x), rtol=1e-12, atol=1e-12)
    ops = [op.op for op in plan.ops]
    assert ("Rows" in ops) == ("stack_pointwise" in passes)


@given(seed=st.integers(0, 2**16), block=st.sampled_from([None, 7, 64, 1000]))
def test_column_blocks_change_nothing(seed, block):
    rng = np.random.default_rng(seed)
    model = _ConvBn(True, None).to(np.float64)
    _randomise_statistics(model, rng)
    x = rng.normal(size=(3, 3, 9, 9))
    plan = tinynet.inference(model, x, column_block=block)
    np.testing.assert_allclose(plan(x).data, _eager(model, x), rtol=1e-12, atol=1e-12)


@given(
    rows=st.integers(1, 9),
    columns=st.integers(1, 300),
    with_bias=st.booleans(),
    with_relu=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_epilogue_is_add_bias_then_relu_bitwise(rows, columns, with_bias, with_relu, dtype):
    rng = np.random.default_rng(rows * 1000 + columns)
    wide = rng.normal(size=(rows, columns + 5)).astype(dtype)
    wide[0, 2] = -0.0  # passes through without bias and ReLU alike
    bias = rng.normal(size=rows).astype(dtype)
    want = wide[:, 2 : 2 + columns].copy()
    if with_bias:
        add_bias(want, bias)
    if with_relu:
        want = relu(want)
    outside = np.delete(wide, np.s_[2 : 2 + columns], axis=1)
    bias_relu(wide, 2, 2 + columns, bias, with_bias, with_relu)  # a block of columns
    block = wide[:, 2 : 2 + columns]
    np.testing.assert_array_equal(np.delete(wide, np.s_[2 : 2 + columns], axis=1), outside)
    np.testing.assert_array_equal(block, want)
    assert np.array_equal(np.signbit(block), np.signbit(want))


@given(
    st.lists(
        st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 20)),
        min_size=1,
        max_size=30,
    )
)
def test_arena_never_overlaps_buffers_alive_together(requests):
    buffers = {f"b{i}": (size, min(a, b), max(a, b)) for i, (size, a, b) in enumerate(requests)}
    offsets, total = arena_offsets(buffers)
    items = list(buffers.items())
    for i, (key, (size, first, last)) in enumerate(items):
        assert offsets[key] % 64 == 0 and offsets[key] + size <= total
        for other, (size2, first2, last2) in items[i + 1 :]:
            if first <= last2 and first2 <= last:
                a, b = offsets[key], offsets[other]
                assert a + size <= b or b + size2 <= a


def test_plan_without_example_plans_on_its_first_call():
    model = _ConvBn(True, (3, 2, 1, True)).to(np.float64)
    plan = tinynet.inference(model)
    with pytest.raises(RuntimeError, match="nothing is planned yet"):
        plan.describe()
    x = np.random.default_rng(4).normal(size=(3, 3, 8, 8))
    for batch in (x, x, x[:2], x):  # planned, run, planned (another shape), run
        np.testing.assert_allclose(plan(batch).data, _eager(model, batch), rtol=1e-10)
    assert plan.example_shape == x.shape


class _Wide3x3(nn.Module):
    """A 3x3 stride-1 padding-1 convolution big enough for ``use_winograd``, into a concat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.side = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return F.cat([self.side(x), F.relu(self.conv(x))], dim=1)


def test_winograd_steps_stay_within_their_error_bound():
    from tinynet.inference.winograd import error_bound

    model = _Wide3x3()
    x = np.random.default_rng(5).normal(size=(2, 32, 16, 16)).astype(np.float32)
    plan = tinynet.inference(model, x)
    assert any("Winograd F(2x2,3x3)" in f for op in plan.ops for f in op.fused)
    got = plan(x).data[:, 8:]
    x64, weight = x.astype(np.float64), model.conv.weight.data.astype(np.float64)
    exact = F.conv2d(x64, weight, model.conv.bias.data.astype(np.float64), padding=1).data
    exact = np.maximum(exact, 0)  # ReLU moves no value further from another
    bound = error_bound(x64.transpose(1, 0, 2, 3), weight, model.conv.bias.data, np.float32)
    bound = bound.reshape(32, 2, 16, 16).transpose(1, 0, 2, 3)
    assert (np.abs(got - exact) <= bound).all()
    direct = tinynet.inference(model, x, winograd=False)
    assert not any("Winograd" in f for op in direct.ops for f in op.fused)
    np.testing.assert_allclose(got, direct(x).data[:, 8:], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(plan(x).data[:, :8], direct(x).data[:, :8])


def test_winograd_steps_check_no_argument_at_run_time(monkeypatch):
    """The plan made U, out and scratch itself: its Winograd steps call the unchecked inner
    function, so a run makes none of ``winograd_conv3x3``'s argument checks."""
    from tinynet.inference import winograd

    model = _Wide3x3()
    x = np.random.default_rng(6).normal(size=(2, 32, 16, 16)).astype(np.float32)
    plan = tinynet.inference(model, x)
    expected = plan(x).data

    def refuse(*args):
        raise AssertionError("an argument check ran at run time")

    monkeypatch.setattr(winograd, "_check", refuse)
    np.testing.assert_array_equal(plan(x).data, expected)


def test_plan_runs_a_model_read_from_onnx(tmp_path):
    pytest.importorskip("onnx", reason="tinynet.onnx reads ONNX files with the onnx package")
    from tinynet.onnx import export, load

    rng = np.random.default_rng(6)
    source = MODELS["small"].build()
    _randomise_statistics(source, rng)
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    model = load(export(source, x, tmp_path / "small.onnx"))
    plan = tinynet.inference(model, x)
    assert _relative_error(plan(x).data, _eager(model, x)) < 2e-5
    assert _relative_error(plan(x[:1]).data, _eager(model, x[:1])) < 2e-5


class _Casting(nn.Module):
    """A float32 input computed on in float64 by a float64 convolution, then cast back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1).to(np.float64)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.conv(F.cast(x, np.float64))), 2)
        return self.head(F.cast(y, np.float32))


def test_values_of_another_dtype_than_the_input_run_by_their_functions():
    model = _Casting()
    x = np.random.default_rng(7).normal(size=(2, 3, 6, 6)).astype(np.float32)
    plan = tinynet.inference(model, x)
    np.testing.assert_array_equal(plan(x).data, _eager(model, x))
    assert [op.op for op in plan.ops] == ["Cast", "Conv2d", "MaxPool2d", "ReLU", "Cast", "Conv2d"]


def test_trace_on_call_runs_a_shape_eagerly_until_its_call():
    model = _ConvBn(True, (2, 2, 0, False)).to(np.float64)
    plan = tinynet.inference(model, trace_on_call=2)
    x = np.random.default_rng(8).normal(size=(3, 3, 8, 8))
    expected = _eager(model, x)
    np.testing.assert_allclose(plan(x).data, expected, rtol=1e-10)  # eager
    with pytest.raises(RuntimeError, match="nothing is planned yet"):
        plan.describe()
    np.testing.assert_allclose(plan(x).data, expected, rtol=1e-10)  # traced and planned
    assert plan.example_shape == x.shape
    np.testing.assert_allclose(plan(x).data, expected, rtol=1e-10)  # run
    with pytest.raises(ValueError, match="trace_on_call must be an int >= 1; got 0"):
        tinynet.inference(model, trace_on_call=0)


def test_a_planned_forward_allocates_only_its_outputs():
    """Convolutions (im2col scratch and all), BatchNorm, ReLU, pools and concatenations live in
    the arena: a call's allocations are its returned output and small change."""
    import tracemalloc

    model = _SharedInput()
    x = np.random.default_rng(9).normal(size=(4, 4, 16, 16)).astype(np.float32)
    plan = tinynet.inference(model, x)
    plan(x)
    tracemalloc.start()
    out = plan(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.data.nbytes > 10_000  # the output itself: 4 x 17 x 16 x 16 floats
    assert peak < out.data.nbytes + 8_000


def test_calls_from_several_threads_take_turns():
    from concurrent.futures import ThreadPoolExecutor

    model = _SharedInput().to(np.float64)
    rng = np.random.default_rng(10)
    inputs = [rng.normal(size=(2, 4, 6, 6)) for _ in range(8)]
    plan = tinynet.inference(model, inputs[0])
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda x: plan(x).data, inputs))
    for x, out in zip(inputs, outputs):
        np.testing.assert_allclose(out, _eager(model, x), rtol=1e-12, atol=1e-12)


def test_planning_holds_about_a_no_grad_forward_in_memory():
    """The traced forward drops what its ops save for backward module by module: its peak is
    an eager no_grad forward's, not a training forward's (six times as much here)."""
    import tracemalloc

    model = MODELS["small"].build().eval()
    x = np.random.default_rng(11).random((32, 3, 32, 32)).astype(np.float32)

    def peak(run) -> int:
        tracemalloc.start()
        run()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    with no_grad():
        eager = peak(lambda: model(x))
    assert peak(lambda: tinynet.inference(model)(x)) < 1.3 * eager + 2**20


def test_the_snapshot_shares_forward_hooks_and_drops_backward_ones():
    """A hook bound to an object that cannot be copied (a lock, as a trainer holds) stays
    shared: planning neither copies nor loses it."""
    import threading

    class Recorder:
        def __init__(self):
            self.lock, self.shapes = threading.Lock(), []

        def record(self, module, args, output):
            self.shapes.append(output.shape)

        def backward(self, module, grad_input, grad_output):
            raise AssertionError("an inference plan runs no backward hook")

    model = _ConvBn(True, None)
    recorder = Recorder()
    model.conv.register_forward_hook(recorder.record)
    model.conv.register_full_backward_hook(recorder.backward)
    model.conv.weight.register_hook(recorder.backward)
    x = np.random.default_rng(12).normal(size=(2, 3, 5, 5)).astype(np.float32)
    plan = tinynet.inference(model, x)
    assert recorder.shapes == [(2, 5, 5, 5)]  # the traced forward ran the hook
    np.testing.assert_allclose(plan(x).data, _eager(model, x), rtol=1e-5, atol=1e-6)
    assert len(model.conv._forward_hooks) == len(model.conv._backward_hooks) == 1
