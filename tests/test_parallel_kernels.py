"""Every ``@parallel`` kernel runs on the calling thread below ``SERIAL_BELOW`` elements and on
the worker threads above it (tinynet/kernels/__init__.py): the two must give the same bits."""

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
import tinynet.kernels
from tinynet.models import googlenet_small, googlenet_torchvision

from strategies import uniform


def _step(build, side: int, extra_ops: bool):
    """Outputs, loss and every gradient of a training-mode forward and backward, float64."""
    tinynet.manual_seed(0)
    model = build(num_classes=10, aux_logits=False).double()
    x = tinynet.tensor(uniform(0, (2, 3, side, side)), requires_grad=True)
    out = model(x)
    if extra_ops:  # the kernels GoogLeNet's variants above do not reach
        y = F.local_response_norm(F.relu(x), 3)
        y = F.avg_pool2d(y, 3, stride=2, padding=1, ceil_mode=True)
        y = F.max_pool2d(y, 2, stride=2)
        out = out + y.sum(dim=(1, 2, 3)).reshape(2, 1)
    loss = F.cross_entropy(out, np.array([1, 7]))
    loss.backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return [out.data, loss.data, *grads]


@pytest.mark.parametrize(
    "build, side, extra_ops",
    [(googlenet_small, 32, True), (googlenet_torchvision, 64, False)],
    ids=["small", "torchvision"],
)
def test_threaded_and_serial_kernels_give_the_same_bits(monkeypatch, build, side, extra_ops):
    monkeypatch.setattr(tinynet.kernels, "SERIAL_BELOW", 0)  # every kernel on the threads
    threaded = _step(build, side, extra_ops)
    monkeypatch.setattr(tinynet.kernels, "SERIAL_BELOW", 2**62)  # every kernel serial
    serial = _step(build, side, extra_ops)
    assert len(threaded) == len(serial) > 10
    for a, b in zip(threaded, serial):
        np.testing.assert_array_equal(a, b)


def _variant_calls(monkeypatch, kernel) -> list[str]:
    """The variants ('serial' or 'threaded') that calls to ``kernel`` run, in order, from now on."""
    calls = []
    for variant in ("threaded", "serial"):
        compiled = getattr(kernel, variant)
        fake = lambda *a, v=variant, c=compiled: calls.append(v) or c(*a)
        monkeypatch.setattr(kernel, variant, fake)
    return calls


def test_the_dispatch_follows_the_largest_array(monkeypatch):
    from tinynet.kernels import activation

    calls = _variant_calls(monkeypatch, activation.relu_forward)
    small = np.ones(tinynet.kernels.SERIAL_BELOW - 1, np.float32)
    large = np.ones(tinynet.kernels.SERIAL_BELOW, np.float32)
    activation.relu_forward(small, small.copy())
    activation.relu_forward(large, large.copy())
    assert calls == ["serial", "threaded"]


def test_a_costly_kernel_takes_the_threads_sooner(monkeypatch):
    from tinynet.kernels import pool

    kernel = pool.max_pool2d_3x3_same
    assert kernel.cost > 1
    calls = _variant_calls(monkeypatch, kernel)
    threshold = -(-tinynet.kernels.SERIAL_BELOW // kernel.cost)  # elements where threads start
    for planes in (threshold // 16 - 1, threshold // 16):
        x = np.ones((planes, 1, 4, 4), np.float32)
        kernel(x, np.empty_like(x))
    assert calls == ["serial", "threaded"]


def test_both_variants_divide_by_zero_as_numpy_does():
    """numba compiles a ``prange`` body with NumPy's error model; the serial twin follows it
    (with Python's it raised ZeroDivisionError where the threaded one gave inf)."""
    from tinynet.kernels import lrn

    x = np.zeros((3, 8), np.float32)  # S = k + 0 = 0: S^-β divides by zero
    scalars = (np.float32(1e-4 / 5), np.float32(0.75), np.float32(0.0))
    for variant in (lrn.lrn_forward.serial, lrn.lrn_forward.threaded):
        y, s_pow = variant(x, 5, *scalars)
        assert np.isinf(s_pow).all() and np.isnan(y).all()  # 0 · inf
