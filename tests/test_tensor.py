"""The engine: Tensor construction, backward, accumulation, graph freeing, no_grad, dtypes."""

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
from tinynet import Tensor


def test_python_floats_default_to_float32_and_arrays_keep_their_dtype():
    assert tinynet.tensor([1.0, 2.0]).dtype == np.float32
    assert tinynet.tensor(3.0).dtype == np.float32
    assert tinynet.tensor(np.zeros(2)).dtype == np.float64
    assert tinynet.tensor([1, 2]).dtype == np.int64
    assert tinynet.tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_requires_grad_on_integers_is_refused():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        tinynet.tensor([1, 2], requires_grad=True)


def test_scalar_backward_seeds_one():
    x = tinynet.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])
    assert x.grad.dtype == np.float32


def test_non_scalar_backward_needs_a_gradient():
    x = tinynet.tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\).*gradient"):
        y.backward()
    with pytest.raises(ValueError, match=r"needs shape \(2, 3\); got \(3,\)"):
        y.backward(np.ones(3))
    y.backward(np.full((2, 3), 0.5))
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_backward_on_a_tensor_without_graph_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tinynet.tensor(1.0).backward()


def test_gradients_accumulate_over_several_consumers():
    # An Inception block's input feeds four branches; their gradients must add up.
    x = tinynet.tensor(np.arange(6.0).reshape(1, 6), dtype=np.float64, requires_grad=True)
    branches = [x * float(k) for k in (1, 2, 3, 4)]
    F.cat(branches, dim=0).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((1, 6), 10.0))


def test_gradients_accumulate_over_two_backward_passes():
    x = tinynet.tensor([1.0, -2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, -8.0])
    z = (x * 3.0).sum()  # a new graph also adds to the existing .grad
    z.backward()
    np.testing.assert_array_equal(x.grad, [7.0, -5.0])


def test_second_backward_without_retain_graph_is_an_error():
    x = tinynet.tensor([1.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_backward_frees_saved_arrays_and_intermediate_gradients():
    x = tinynet.tensor(np.ones(4), requires_grad=True)
    hidden = x * x
    saved = weakref.ref(hidden._ctx)
    out = hidden.sum()
    out.backward()
    assert hidden._ctx.released and hidden._ctx.parents == ()
    assert hidden.grad is None  # intermediates keep no gradient unless asked
    del hidden, out
    gc.collect()
    assert saved() is None


def test_the_graph_keeps_no_intermediate_values_an_op_did_not_save():
    # Add saves nothing of its inputs, so once the user drops `hidden` its array is freed while
    # the graph behind `out` lives; hooks on it still run and backward is unchanged.
    x = tinynet.tensor(np.arange(4.0), requires_grad=True)
    hidden = x * x
    values = weakref.ref(hidden.data)
    seen = []
    hidden.register_hook(lambda grad: seen.append(grad.copy()))
    out = (hidden + 1.0).sum()
    del hidden
    gc.collect()
    assert values() is None
    out.backward()
    np.testing.assert_array_equal(seen[0], np.ones(4))
    np.testing.assert_array_equal(x.grad, 2 * np.arange(4.0))


def test_googlenet_training_graph_holds_only_what_backward_reads():
    # After the forward, the arrays alive are the parameters, the input and what the ops saved
    # (each conv's input, each ReLU's output, LRN's input and scale, pool winners): not every
    # op's output (each conv's before its ReLU, each branch before its concat).
    model = tinynet.models.googlenet_paper(num_classes=10)
    x = tinynet.tensor(np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32))
    model(x)  # the first forward also allocates what later ones reuse (window tables)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = model(x)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    existing = {id(x.data)} | {id(p.data) for p in model.parameters()}
    saved = _saved_bytes(out, existing)
    assert saved < held < 1.1 * saved, (held, saved)


def _saved_bytes(outputs, existing) -> int:
    """Bytes of the distinct arrays the ops behind ``outputs`` saved for backward (each array's
    whole memory block once), those in ``existing`` (ids) aside."""
    blocks, stack, seen = {}, [t._ctx for t in outputs], set()
    while stack:
        ctx = stack.pop()
        if ctx is None or id(ctx) in seen:
            continue
        seen.add(id(ctx))
        saved = list(ctx.saved_tensors) + [
            v for v in vars(ctx).values() if isinstance(v, np.ndarray)
        ]
        for array in saved:
            while isinstance(array.base, np.ndarray):
                array = array.base
            if id(array) not in existing:
                blocks[id(array)] = array
        stack.extend(p._ctx for p in ctx.parents if p is not None)
    return sum(a.nbytes for a in blocks.values())


def test_gradients_of_a_tensor_with_several_consumers_add_up_without_touching_shared_arrays():
    # (s + t)'s backward hands one array to both s and t, and s = a + a's to a twice; the sum
    # for a is made out of place, then a's third gradient (from t = 3a) is added into it.
    x = tinynet.tensor(np.arange(1.0, 5.0), requires_grad=True)
    a = x * 2.0
    s, t = a + a, a * 3.0
    for hidden in (s, t):
        hidden.retain_grad()
    (s + t).sum().backward()
    np.testing.assert_array_equal(s.grad, np.ones(4))
    np.testing.assert_array_equal(t.grad, np.ones(4))
    np.testing.assert_array_equal(x.grad, np.full(4, 10.0))  # (1 + 1 + 3) * 2


def test_a_0d_tensor_used_three_times_sums_its_gradients():
    # The first sum of two 0-d gradients must stay an array the third can be added into.
    b = tinynet.tensor(np.array(1.5), requires_grad=True)
    c = b * 2.0
    (c * c + c).backward()  # d/db (4b² + 2b) = 8b + 2
    assert b.grad.shape == () and b.grad == 14.0


def test_retain_grad_keeps_an_intermediate_gradient():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    hidden = x * 3.0
    hidden.retain_grad()
    (hidden * hidden).sum().backward()
    np.testing.assert_array_equal(hidden.grad, [6.0, 12.0])


def test_broadcasting_is_summed_back_in_backward():
    a = tinynet.tensor(np.ones((3, 1)), requires_grad=True)
    b = tinynet.tensor(np.ones(4), requires_grad=True)
    (a * b).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad, np.full(4, 3.0))


def test_each_gradient_keeps_its_inputs_dtype():
    a = tinynet.tensor(np.ones(3, np.float32), requires_grad=True)
    b = tinynet.tensor(np.ones(3, np.float64), requires_grad=True)
    out = (a * b).sum()
    assert out.dtype == np.float64  # promotion as NumPy and PyTorch
    out.backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_python_scalars_do_not_promote_float32():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    y = 2.5 * x + 1.0 - x / 3.0
    assert y.dtype == np.float32


def test_no_grad_records_nothing_and_works_as_a_decorator():
    x = tinynet.tensor([1.0], requires_grad=True)
    with tinynet.no_grad():
        y = x * 2.0
        with tinynet.enable_grad():
            z = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad
    assert tinynet.is_grad_enabled()

    @tinynet.no_grad()
    def infer(t):
        return t * 2.0

    assert not infer(x).requires_grad


def test_deep_graphs_do_not_hit_the_recursion_limit():
    x = tinynet.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0])


def test_detach_shares_memory_and_leaves_the_graph():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.numpy(), d.data)


def test_ndarray_operands_defer_to_tensor():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0], np.float32) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_unused_inputs_get_no_gradient():
    a = tinynet.tensor([1.0], requires_grad=True)
    b = tinynet.tensor([1.0], requires_grad=True)
    (a * 2.0).sum().backward()
    assert b.grad is None


def test_item_and_repr():
    x = tinynet.tensor([[1.5]], requires_grad=True)
    assert x.item() == 1.5
    assert "requires_grad=True" in repr(x)
    assert "grad_fn=MulFunction" in repr(x * 2.0)
    with pytest.raises(ValueError, match="one element"):
        tinynet.zeros(2).item()


def test_to_casts_and_gradients_flow_back_in_the_original_dtype():
    x = tinynet.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    with pytest.raises(TypeError, match="floating"):
        x.to(np.int32)


class _Scale(tinynet.Function):
    """y = 2x, with a backward that returns what the test asks for."""

    @staticmethod
    def forward(ctx, x, answer):
        ctx.answer = answer
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return ctx.answer(grad)


@pytest.mark.parametrize(
    "answer, match",
    [
        (lambda g: (2 * g, 2 * g), r"_Scale.backward returned 2 gradients for 1 inputs"),
        (
            lambda g: (2 * g)[:1],
            r"_Scale.backward returned a gradient of shape \(1,\) for input 0 of shape \(3,\)",
        ),
    ],
)
def test_a_backward_that_breaks_the_function_contract_is_named(answer, match):
    x = tinynet.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=match):
        _Scale.apply(x, answer=answer).sum().backward()


def test_a_gradient_in_another_dtype_is_cast_to_its_inputs():
    x = tinynet.tensor([1.0, 2.0, 3.0], requires_grad=True)
    _Scale.apply(x, answer=lambda g: (2 * g).astype(np.float64)).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
