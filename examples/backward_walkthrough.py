"""One backward pass, step by step, and how tinynet checks that every backward is right.

What it shows, in float64 on a graph small enough to print:

1. conv2d -> relu -> max_pool2d -> flatten -> linear -> cross_entropy, built from
   ``tinynet.functional``: each node's output shape, then after ``loss.backward()`` the
   gradient that reached each node (``retain_grad()`` keeps the intermediate ones).
2. conv2d's weight gradient by hand. The forward is one matrix product, Y = W · cols, where
   ``cols = im2col(x)`` holds in each column the input window one output pixel sees
   (``tinynet.kernels.im2col``). So dL/dW = dY · colsᵀ, dL/db = Σ dY, and dL/dx = col2im(Wᵀ · dY):
   recomputed here from the gradient that reached the conv's output, and compared.
3. ``tinynet.check_gradients`` (central finite differences) on the conv op and on a whole
   Inception block, with the largest errors.
4. A deliberately wrong backward, d(x²)/dx = x instead of 2x, in a custom ``tinynet.Function``:
   the check reports the elements where it disagrees, and ``tinynet.gradcheck`` raises.

Run:

    python examples/backward_walkthrough.py
    python examples/backward_walkthrough.py --seed 3 --batch 1
"""

from __future__ import annotations

import argparse

import numpy as np

import tinynet
from tinynet import functional as F
from tinynet.kernels.im2col import col2im, im2col
from tinynet.models import Inception


def leaf(values) -> tinynet.Tensor:
    """A float64 tensor that gradients flow back to."""
    return tinynet.tensor(values, dtype=np.float64, requires_grad=True)


def walk_the_graph(rng, batch: int) -> dict:
    print("== 1. forward, then backward through conv -> relu -> max_pool -> linear -> loss")
    x = leaf(rng.normal(size=(batch, 2, 6, 6)))
    w = leaf(rng.normal(scale=0.5, size=(3, 2, 3, 3)))
    b = leaf(rng.normal(scale=0.1, size=3))
    fc_w = leaf(rng.normal(scale=0.3, size=(4, 27)))
    fc_b = leaf(np.zeros(4))
    target = rng.integers(0, 4, batch)

    conv = F.conv2d(x, w, b, stride=1, padding=1)
    relu = F.relu(conv)
    pool = F.max_pool2d(relu, 2)
    flat = F.flatten(pool, 1)
    logits = F.linear(flat, fc_w, fc_b)
    loss = F.cross_entropy(logits, target)
    nodes = {"conv": conv, "relu": relu, "pool": pool, "flat": flat, "logits": logits}
    for node in nodes.values():
        node.retain_grad()  # intermediate tensors drop their gradient unless asked to keep it

    ops = {
        "conv": "conv2d(x, w, b, padding=1)",
        "relu": "relu(conv)",
        "pool": "max_pool2d(relu, 2)",
        "flat": "flatten(pool, 1)",
        "logits": "linear(flat, fc_w, fc_b)",
        "loss": "cross_entropy(logits, target)",
    }
    loss.backward()
    print(f"{'node':<8} {'op':<30} {'output shape':<15} {'grad shape':<15} {'|grad|max':>9}")
    for name, node in {**nodes, "loss": loss}.items():
        grad = node.grad if name != "loss" else np.ones(())
        print(
            f"{name:<8} {ops[name]:<30} {str(node.shape):<15} {str(grad.shape):<15} "
            f"{np.abs(grad).max():>9.2e}"
        )
    print(f"loss = {loss.item():.6f}; gradients of the leaves:")
    for name, t in {"x": x, "w": w, "b": b, "fc_w": fc_w, "fc_b": fc_b}.items():
        print(f"  {name:<5} {str(t.shape):<15} grad {t.grad.shape}")
    zeros = float((relu.data == 0).mean())
    print(
        f"relu zeroed {100 * zeros:.0f}% of conv's outputs, and max_pool passes gradient to one "
        f"input of each 2x2 window: {100 * float((conv.grad == 0).mean()):.0f}% of conv.grad is 0"
    )
    return {"x": x, "w": w, "b": b, "dy": conv.grad}


def conv_by_hand(x, w, b, dy) -> None:
    print("\n== 2. conv2d's gradients by hand from dY (the gradient at the conv's output)")
    n, c, h, width = x.shape
    o, _, kh, kw = w.shape
    oh, ow = dy.shape[2:]
    # im2col takes the input channel-major (C, N, H, W) and fills a (C·kh·kw, N·OH·OW) matrix.
    x_cnhw = np.ascontiguousarray(x.data.transpose(1, 0, 2, 3))
    cols = np.empty((c * kh * kw, n * oh * ow))
    im2col(x_cnhw, (kh, kw), (1, 1), (1, 1), (oh, ow), cols)
    # dY as a matrix in the same order as W · cols: rows are output channels, columns (n, p, q).
    dy_rows = dy.transpose(1, 0, 2, 3).reshape(o, n * oh * ow)
    w_rows = w.data.reshape(o, c * kh * kw)
    print(
        f"cols = im2col(x): {cols.shape}  (C·kh·kw = {c}·{kh}·{kw} rows, "
        f"N·OH·OW = {n}·{oh}·{ow} columns)"
    )
    print(f"forward:  Y = W{w_rows.shape} · cols{cols.shape} + b -> {dy_rows.shape}")
    forward = (w_rows @ cols + b.data[:, None]).reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    recomputed = F.conv2d(x.data, w.data, b.data, padding=1).data
    print(f"          max |W·cols + b - conv2d(x)| = {np.abs(forward - recomputed).max():.1e}")

    dw = (dy_rows @ cols.T).reshape(w.shape)
    db = dy_rows.sum(axis=1)
    dx = col2im(w_rows.T @ dy_rows, (kh, kw), (1, 1), (1, 1), (oh, ow), np.zeros((c, n, h, width)))
    dx = dx.transpose(1, 0, 2, 3)
    for name, mine, theirs, formula in (
        ("dW", dw, w.grad, "dY · colsᵀ"),
        ("db", db, b.grad, "Σ_columns dY"),
        ("dx", dx, x.grad, "col2im(Wᵀ · dY)"),
    ):
        error = float(np.abs(mine - theirs).max())
        assert error < 1e-12, (name, error)
        print(
            f"{name} = {formula:<16} {str(mine.shape):<14} max |by hand - backward| = {error:.1e}"
        )


def report(title: str, result) -> None:
    print(f"-- {title}: {'ok' if result.ok else 'FAILED'}")
    print("   " + str(result).replace("\n", "\n   "))


def run_gradchecks(rng) -> None:
    print("\n== 3. gradient checks: analytic backward vs central finite differences (float64)")
    x = leaf(rng.normal(size=(2, 3, 6, 6)))
    w = leaf(rng.normal(size=(4, 3, 3, 3)))
    b = leaf(rng.normal(size=4))
    conv = lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1)  # noqa: E731
    result = tinynet.check_gradients(conv, [x, w, b], atol=1e-7, rtol=1e-5)
    report("conv2d, stride 2, padding 1 (inputs x, w, b)", result)
    assert result.ok

    # A whole Inception block: 4 input channels; branches of 2, 3 (after a 2-channel reduce),
    # 2 (after a 1-channel reduce) and 2 channels. Its ReLUs and max pool have kinks, where
    # the function has no derivative: skip_kinks skips (and counts) elements within eps of one.
    block = Inception(4, 2, 2, 3, 1, 2, 2).double()
    for parameter in block.parameters():
        parameter.data[...] = rng.normal(scale=0.5, size=parameter.shape)
    x = leaf(rng.normal(size=(2, 4, 5, 5)))
    weights = [block.branch2[1].conv.weight, block.branch3[1].conv.weight]
    result = tinynet.check_gradients(
        lambda x, *w: block(x), [x, *weights], atol=1e-7, rtol=1e-5, skip_kinks=True
    )
    report("Inception(4 -> 2+3+2+2 channels) (inputs x, branch2's 3x3 and branch3's 5x5)", result)
    assert result.ok
    worst = max(r.max_abs_error for r in result.inputs)
    print(f"gradcheck passed: conv2d and the Inception block, max abs error {worst:.1e}")


class BuggySquare(tinynet.Function):
    """y = x², with a backward that forgets the factor 2: dy/dx = x instead of 2x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x  # the bug: should be 2 * x * grad


def catch_a_bug(rng) -> None:
    print("\n== 4. a wrong backward: d(x²)/dx computed as x, not 2x")
    x = leaf(rng.uniform(0.5, 2.0, size=(2, 3)))
    result = tinynet.check_gradients(BuggySquare.apply, [x])
    report("BuggySquare", result)
    assert not result.ok, "gradcheck should have caught the missing factor 2"
    try:
        tinynet.gradcheck(BuggySquare.apply, [x])
    except tinynet.GradcheckError as error:
        first = str(error).splitlines()[0]
        print(f"caught the wrong backward: tinynet.gradcheck raised GradcheckError: {first}")
    else:
        raise AssertionError("gradcheck did not raise")
    # The analytic gradient is exactly half the numeric one, everywhere.
    worst = result.inputs[0].worst[0]
    print(f"at {worst[0]}: analytic / numeric = {worst[1] / worst[2]:.6f} (the missing factor 2)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2, help="images in section 1's batch")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    saved = walk_the_graph(rng, args.batch)
    conv_by_hand(**saved)
    run_gradchecks(rng)
    catch_a_bug(rng)


if __name__ == "__main__":
    main()
