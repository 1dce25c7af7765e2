"""Hypothesis strategies for op cases: the shapes and arguments an op is called with, drawn over
everything it accepts, edge cases included. Public, for anyone's own hypothesis tests:

    from hypothesis import given
    from tinynet.testing.strategies import conv_cases, seeds

    @given(conv_cases(), seeds)
    def test_my_conv(case, seed):
        x, weight, bias = case.arrays(seed)
        ...

One strategy per op family, shared by tinynet's own op tests, the twin tests, ``check_op``
(tinynet/testing/check.py) and any other test that calls the op: an edge case added here
reaches every test of that op. A strategy draws shapes and arguments only; the values come from
a seed (``uniform``), so a failing case shrinks to small shapes. The bounds are parameters:
a test that runs an expensive check (finite differences, a composed twin) asks for smaller cases.
"""

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(
        tuple
    )


def uniform(seed, shape, low=-2.0, high=2.0, dtype=np.float64):
    """Values uniform in [low, high)."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def pair(value):
    """An int-or-pair argument (kernel_size, stride, padding) as the pair it stands for."""
    return (value, value) if isinstance(value, int) else tuple(value)


def _int_or_pair(draw, values):
    """``values`` (a pair) as a user may write it: an int when both sides are equal (sometimes),
    else the pair."""
    return values[0] if values[0] == values[1] and draw(st.booleans()) else values


# ------------------------------------------------------------------ convolution
class Conv(NamedTuple):
    """One convolution: the input (n, c_in, h, w), the weight (c_out, c_in, kh, kw), the bias
    (c_out,) if with_bias, and conv2d's stride and padding arguments as a user passes them."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    with_bias: bool = True

    def arrays(self, seed, dtype=np.float64):
        """(x, weight, bias or None), uniform in [-2, 2) from consecutive seeds."""
        x = uniform(seed, (self.n, self.c_in, self.h, self.w), dtype=dtype)
        weight = uniform(seed + 1, (self.c_out, self.c_in, self.kh, self.kw), dtype=dtype)
        bias = uniform(seed + 2, (self.c_out,), dtype=dtype) if self.with_bias else None
        return x, weight, bias

    @property
    def pads(self):
        return conv_pads(self.padding, self.kh, self.kw)


def conv_pads(padding, kh, kw):
    """((top, bottom), (left, right)) as PyTorch reads conv2d's padding argument: 'same' pads
    k - 1 in total, the odd one of an even kernel at the bottom/right."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw))
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


@st.composite
def conv_cases(draw, max_batch=3, max_channels=4, max_kernel=4, max_side=8):
    """Valid convolutions (conv2d has no dilation or groups, so none are drawn).

    Batches and channel counts from 1 (a single image; a single channel in and out: the GEMMs'
    degenerate rows), square and rectangular kernels from 1x1 (the path without im2col), strides
    as an int or a pair up to 3 (so larger than a 1x1 or 2x2 kernel: skipped pixels), padding as
    an int or a pair up to 3 (larger than the kernel too), 'valid', and 'same' (with stride 1,
    as PyTorch requires; an even kernel pads one more at the bottom/right), and images from the
    smallest the padded kernel fits in (a single output pixel) to ``max_side``; with or without
    a bias.
    """
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    side_pad = st.integers(0, 3)
    padding = draw(
        st.one_of(side_pad, st.tuples(side_pad, side_pad), st.sampled_from(["same", "valid"]))
    )
    side_stride = st.integers(1, 3)
    stride = (
        1
        if padding == "same"
        else draw(st.one_of(side_stride, st.tuples(side_stride, side_stride)))
    )
    (top, bottom), (left, right) = conv_pads(padding, kh, kw)
    return Conv(
        n=draw(st.integers(1, max_batch)),
        c_in=draw(st.integers(1, max_channels)),
        c_out=draw(st.integers(1, max_channels)),
        h=draw(st.integers(max(1, kh - top - bottom), max(kh, max_side))),
        w=draw(st.integers(max(1, kw - left - right), max(kw, max_side))),
        kh=kh,
        kw=kw,
        stride=stride,
        padding=padding,
        with_bias=draw(st.booleans()),
    )


# ------------------------------------------------------------------ pooling
POOLS = ("avg_pool2d", "max_pool2d")


class Pool(NamedTuple):
    """One sliding-window pool: ``F.<op>(x, **kwargs)`` for x of ``shape`` (N, C, H, W), the
    arguments as a user passes them (int or pair; stride None means the kernel size)."""

    op: str
    shape: tuple[int, int, int, int]
    kernel_size: int | tuple[int, int]
    stride: None | int | tuple[int, int]
    padding: int | tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool = True  # avg_pool2d's only

    @property
    def kwargs(self):
        kwargs = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)
        kwargs["ceil_mode"] = self.ceil_mode
        if self.op == "avg_pool2d":
            kwargs["count_include_pad"] = self.count_include_pad
        return kwargs


@st.composite
def pool_cases(draw, op=None, max_kernel=4, max_side=9, max_batch=2, max_channels=3):
    """max_pool2d and avg_pool2d cases (``op`` fixes one) whose output is not empty (the ops have
    no dilation, so none is drawn).

    Square and rectangular kernels from 1x1, written as an int or a pair; the default stride
    (None), an int, or a pair up to 3 (wider than a small kernel: skipped pixels); padding up to
    half the kernel on each axis (PyTorch's limit, so 0 for a 1-wide side); ceil_mode, whose extra
    window may hang over the input's end; for avg_pool2d count_include_pad (divisors of clipped
    windows); images from the smallest a window fits in (padding included) to ``max_side``.
    Values are the test's: a gradient check of max_pool2d wants ``strategies.distinct`` values,
    so that no window's winner is tied.
    """
    name = op or draw(st.sampled_from(POOLS))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    side_stride = st.integers(1, 3)
    stride = draw(st.none() | side_stride | st.tuples(side_stride, side_stride))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    size = tuple(draw(st.integers(max(1, k - 2 * p), max_side)) for k, p in zip(kernel, padding))
    return Pool(
        op=name,
        shape=(draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))) + size,
        kernel_size=_int_or_pair(draw, kernel),
        stride=stride,
        padding=_int_or_pair(draw, padding),
        ceil_mode=draw(st.booleans()),
        count_include_pad=draw(st.booleans()) if name == "avg_pool2d" else True,
    )


class AdaptivePool(NamedTuple):
    """``F.adaptive_avg_pool2d(x, output_size)`` for x of ``shape`` (N, C, H, W)."""

    shape: tuple[int, int, int, int]
    output_size: int | tuple[int | None, int | None]


@st.composite
def adaptive_pool_cases(draw, max_side=9, max_output=6):
    """Inputs from 1x1 to ``max_side`` and output sizes as an int or a pair whose entries may be
    None (keep that side), from 1 (global pooling) to ``max_output``: outputs that divide the
    input, that do not (overlapping windows), and that are larger than it (repeated pixels)."""
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    side = st.integers(1, max_output)
    return AdaptivePool(shape, draw(side | st.tuples(st.none() | side, st.none() | side)))


# ------------------------------------------------------------------ normalisation
class LRN(NamedTuple):
    """``F.local_response_norm(x, size, alpha, beta, k)`` for x of ``shape`` (N, C, H, W)."""

    shape: tuple[int, int, int, int]
    size: int
    alpha: float
    beta: float
    k: float


@st.composite
def lrn_cases(draw, max_batch=3, max_channels=8, max_side=4):
    """Windows of even and odd sizes from 1 (pointwise) to C + 5, so many are wider than the
    channels (every channel sees the whole zero-padded stack); alpha, beta and k over ranges
    around GoogLeNet's (1e-4, 0.75, 1), and beta = 0.75 half the time, the kernels' own path for
    it (two square roots instead of pow)."""
    shape = (
        draw(st.integers(1, max_batch)),
        draw(st.integers(1, max_channels)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    size = draw(st.integers(1, shape[1] + 5))
    alpha, beta, k = (draw(st.floats(low, high)) for low, high in [(1e-4, 2), (0.1, 1.5), (0.5, 2)])
    if draw(st.booleans()):
        beta = 0.75
    return LRN(shape, size, alpha, beta, k)


class BatchNorm(NamedTuple):
    """One ``F.batch_norm`` call: input ``shape`` (N, C) or (N, C, H, W); ``running``: whether
    running statistics are passed (always in evaluation); ``affine``: whether weight and bias
    are."""

    shape: tuple[int, ...]
    training: bool
    running: bool
    affine: bool
    momentum: float
    eps: float


@st.composite
def batch_norm_cases(draw, training=None, running=None, min_eps=1e-5, max_channels=5):
    """batch_norm over 2-D and 4-D inputs, in training (batch statistics; at least two values
    per channel, as PyTorch requires) and in evaluation (running statistics; a single value per
    channel allowed); running statistics passed or, in training, left out (None: nothing to
    update); with or without weight and bias. momentum from 0 (the running statistics stay) to 1
    (they become the batch's), eps from ``min_eps`` to 0.5 (large enough to shift the scale).
    ``training`` / ``running``: fix them for a test that needs one kind of call."""
    training = draw(st.booleans()) if training is None else training
    if not training:
        running = True
    elif running is None:
        running = draw(st.booleans())
    channels = draw(st.integers(1, max_channels))
    if draw(st.booleans()):
        shape = (draw(st.integers(2 if training else 1, 6)), channels)
    else:
        side = st.integers(1, 3)
        shape = (draw(st.integers(1, 3)), channels, draw(side), draw(side))
        if training and shape[0] * shape[2] * shape[3] == 1:
            shape = (2,) + shape[1:]
    eps_edges = [eps for eps in (1e-5, 1e-3, 0.5) if eps >= min_eps]
    return BatchNorm(
        shape=shape,
        training=training,
        running=running,
        affine=draw(st.booleans()),
        momentum=draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0)),
        eps=draw(st.sampled_from(eps_edges) | st.floats(min_eps, 0.1)),
    )


# ------------------------------------------------------------------ dense layers
class Matmul(NamedTuple):
    """``a @ b`` for a of ``a_shape`` and b of ``b_shape``."""

    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]


@st.composite
def matmul_cases(draw):
    """Vector and matrix operands in every pairing (1-D @ 1-D is a scalar) and batched ones whose
    batch axes broadcast (a 1 on either side), up to two batch axes; sizes from 1."""
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    a_batch = tuple(draw(st.sampled_from([b, 1])) for b in batch)
    b_batch = tuple(draw(st.sampled_from([b, 1])) for b in batch)
    a_shape = draw(st.sampled_from([(k,), a_batch + (m, k), (m, k)]))
    b_shape = draw(st.sampled_from([(k,), b_batch + (k, n), (k, n)]))
    return Matmul(a_shape, b_shape)


class Linear(NamedTuple):
    """``F.linear(x, weight, bias)``: x (*lead, n_in), weight (n_out, n_in), bias (n_out,)."""

    lead: tuple[int, ...]
    n_in: int
    n_out: int
    with_bias: bool

    def arrays(self, seed, dtype=np.float64):
        """(x, weight, bias or None), uniform in [-2, 2) from consecutive seeds."""
        x = uniform(seed, self.lead + (self.n_in,), dtype=dtype)
        weight = uniform(seed + 1, (self.n_out, self.n_in), dtype=dtype)
        bias = uniform(seed + 2, (self.n_out,), dtype=dtype) if self.with_bias else None
        return x, weight, bias


@st.composite
def linear_cases(draw, max_lead=3):
    """A single vector (no leading axes) or up to ``max_lead`` leading axes, features from 1 in
    and out, with or without a bias."""
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=max_lead)))
    return Linear(lead, draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.booleans()))


# ------------------------------------------------------------------ softmax and losses
class Softmax(NamedTuple):
    """``F.softmax(x, dim)`` / ``F.log_softmax(x, dim)`` for x of ``shape``, values up to
    ``scale`` in magnitude."""

    shape: tuple[int, ...]
    dim: int
    scale: float

    def values(self, seed, dtype=np.float64):
        return uniform(seed, self.shape, -self.scale, self.scale, dtype)


# Logit magnitudes: up to 3, and up to 300 where exp overflows unless the maximum is subtracted
# first. A finite-difference check asks for the small ones only: on values near 300 its step's
# rounding error (300 · 1e-16 / 1e-6) is already above its tolerance.
SCALES = {False: [3.0], True: [3.0, 300.0]}


@st.composite
def softmax_cases(draw, max_dims=3, max_side=5, large=True, scales=None):
    """Any axis of a 1- to ``max_dims``-D input, counted from either end, including axes of size
    1 (softmax 1); values of magnitude up to 3, or (``large``) up to 300; ``scales``, if given,
    the magnitudes to draw from instead."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return Softmax(shape, dim, draw(st.sampled_from(scales or SCALES[large])))


class Classification(NamedTuple):
    """``F.cross_entropy(logits, target, reduction, label_smoothing)`` for n samples of
    ``classes`` classes; logits up to ``scale`` in magnitude."""

    n: int
    classes: int
    scale: float
    label_smoothing: float

    def logits(self, seed, dtype=np.float64):
        return uniform(seed, (self.n, self.classes), -self.scale, self.scale, dtype)

    def target(self, seed):
        """n class indices in [0, classes)."""
        return np.random.default_rng(seed).integers(0, self.classes, self.n)


@st.composite
def classification_cases(draw, max_batch=5, max_classes=6, large=True, scales=None):
    """Batches from one sample, from one class (the loss is 0) up to ``max_classes``; logits of
    magnitude up to 3, or (``large``) up to 300: a softmax saturated to one-hot, where
    log-sum-exp must not overflow (``scales``, if given, the magnitudes to draw from instead);
    label smoothing 0, 1 (the uniform target) or between."""
    return Classification(
        n=draw(st.integers(1, max_batch)),
        classes=draw(st.integers(1, max_classes)),
        scale=draw(st.sampled_from(scales or SCALES[large])),
        label_smoothing=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)),
    )


# ------------------------------------------------------------------ reductions
class Reduction(NamedTuple):
    """``F.sum / mean / max(x, dim, keepdim)`` for x of ``shape``."""

    shape: tuple[int, ...]
    dim: None | int | tuple[int, ...]
    keepdim: bool


@st.composite
def reduction_cases(draw, max_dims=4, max_side=4):
    """A 1- to ``max_dims``-D shape with sides from 1, and dim None (everything), one axis
    (maybe negative) or a tuple of distinct axes in any order (all of them included); keepdim
    either way."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-ndim, ndim - 1))
    else:
        dim = tuple(
            draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        )
    return Reduction(shape, dim, draw(st.booleans()))


# ------------------------------------------------------------------ dropout and concatenation
class Dropout(NamedTuple):
    """Dropout of an input of ``shape`` with probability ``p``, its mask given."""

    shape: tuple[int, ...]
    p: float


@st.composite
def dropout_cases(draw, max_dims=4, max_side=4):
    """Inputs of 1 to ``max_dims`` axes; p = 0 (every unit kept, scale 1), 0.5, or between 0 and
    0.9 (p = 1 drops everything and has no finite scale)."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    return Dropout(shape, draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.9)))


class Cat(NamedTuple):
    """``cat(tensors, dim)`` of tensors of ``shapes``, equal but along ``dim``."""

    shapes: tuple[tuple[int, ...], ...]
    dim: int


@st.composite
def cat_cases(draw, max_tensors=4, max_dims=4, max_side=4):
    """One to ``max_tensors`` tensors of 1 to ``max_dims`` axes, joined along any axis counted
    from either end; each with its own length along it, from 1."""
    shape = draw(shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    lengths = draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_tensors))
    axis = dim % len(shape)
    return Cat(tuple(shape[:axis] + (n,) + shape[axis + 1 :] for n in lengths), dim)
