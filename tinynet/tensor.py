"""The Tensor: an ndarray, its gradient, and a link to the op that produced it.

A Tensor made by an op while gradients are recorded keeps that op's context in ``_ctx``
(see ``tinynet.function``). The graph links each op to its inputs' ``GraphNode``s (a leaf's
node is the leaf Tensor itself): what backward needs of a tensor, without its values.
``backward()`` sorts the graph topologically once, seeds the output's gradient and walks the
order in reverse, asking each op for the gradients of its inputs (the chain rule:
dL/dinput = dL/doutput . doutput/dinput) and summing them where a tensor feeds several consumers.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from tinynet import anomaly
from tinynet.hooks import RemovableHandle

DEFAULT_DTYPE = np.dtype(np.float32)


def _tensor_data(data, dtype) -> np.ndarray:
    """What a new Tensor holds: ndarrays and NumPy scalars keep their dtype; Python floats become
    float32."""
    data = as_array(data)
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        return np.asarray(data)
    array = np.asarray(data)
    if array.dtype.kind == "f":
        return array.astype(DEFAULT_DTYPE)
    return array


class _GradientHooks:
    """``register_hook`` and running the hooks: a leaf Tensor's own, a GraphNode's for the op
    output it stands for (where backward finds them)."""

    _hooks: OrderedDict | None = None  # register_hook's, created on first use

    def register_hook(self, hook) -> RemovableHandle:
        """Call ``hook(grad)`` each time backward has computed dL/d(this tensor), before the
        gradient is accumulated into ``.grad`` or passed on; ``grad`` is an ndarray, and a
        return value other than None (an array or Tensor of the same shape) replaces it, as in
        PyTorch. Returns a handle whose ``remove()`` takes the hook away."""
        if not self.requires_grad:
            raise RuntimeError(
                "register_hook: this tensor does not require grad, so backward never reaches it"
            )
        node = self._grad_node  # an op output's hooks live on its node, where backward runs them
        if node._hooks is None:
            node._hooks = OrderedDict()
        return RemovableHandle(node._hooks, hook)

    def _run_hooks(self, grad: np.ndarray) -> np.ndarray:
        for hook in tuple(self._hooks.values()):  # a hook may remove itself
            replaced = hook(grad)
            if replaced is not None:
                replaced = np.asarray(as_array(replaced))
                if replaced.shape != self.shape:
                    raise RuntimeError(
                        f"a tensor hook returned a gradient of shape {replaced.shape} for a "
                        f"tensor of shape {self.shape}"
                    )
                grad = replaced.astype(self.dtype, copy=False)
        return grad


class Tensor(_GradientHooks):
    """An n-dimensional array that can record the operations applied to it.

    data:          the values, an ``np.ndarray``
    grad:          dL/d(this tensor) after ``backward()``, an ndarray of the same shape and dtype
                   (or None); gradients accumulate over several backward passes
    requires_grad: whether ops on this tensor are recorded for ``backward()``
    """

    # ndarray (op) Tensor must defer to Tensor's reflected operators, not broadcast elementwise.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _tensor_data(data, dtype)
        if requires_grad:
            _check_differentiable(self.data.dtype)
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self._node: GraphNode | None = None  # an op output's place in the graph; None: a leaf

    @classmethod
    def _from_op(cls, data: np.ndarray, ctx) -> Tensor:
        """Wrap an op's output without copying or converting it."""
        out = cls.__new__(cls)
        out.data = data if type(data) is np.ndarray else np.asarray(data)
        out.requires_grad = ctx is not None
        out.grad = None
        out._node = None if ctx is None else GraphNode(out, ctx)
        return out

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user made (parameters, inputs), False for op outputs."""
        return self._node is None

    @property
    def _ctx(self):
        """The Context of the op that made this tensor, if recorded (else None)."""
        return None if self._node is None else self._node._ctx

    @property
    def _grad_node(self) -> Tensor | GraphNode:
        """What the graph holds for this tensor: its GraphNode, or a leaf itself."""
        return self if self._node is None else self._node

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2, prefix="tensor(")
        extra = "" if self.dtype == DEFAULT_DTYPE else f", dtype={self.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn={self._ctx.fn.__name__}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element; got shape {self.shape}")
        return self.data.item()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return Tensor(self.data)

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        if self._node is not None:
            self._node.retains_grad = True

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        if requires_grad:
            _check_differentiable(self.dtype)
        self.requires_grad = requires_grad
        return self

    # ----------------------------------------------------------------- backward
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate dL/dx into ``.grad`` of every leaf x this tensor depends on.

        gradient:     dL/d(self), same shape as self; may be omitted for a one-element tensor,
                      which is then seeded with 1.
        retain_graph: keep the graph's saved arrays so backward can run through it again.
        """
        root = self._grad_node
        grads = {id(root): self._seed(gradient)}  # dL/dt of each tensor t reached so far
        summed = set()  # the nodes whose gradient is a sum this walk made, so it may add in place
        watch = anomaly.state.mode  # detect_anomaly(): None when off
        for node in reversed(_topological_order([root])):
            summed.discard(id(node))
            grad = arrived = grads.pop(id(node), None)
            if grad is None:
                continue  # no path from the output reached it (e.g. an unused input)
            if node._hooks:
                grad = node._run_hooks(grad)
            if watch is not None:
                watch.check_arriving(node, arrived, grad, node is root)
            if node.is_leaf or node.retains_grad:
                node._accumulate_grad(grad)
            ctx = node._ctx
            if ctx is None:
                continue
            input_grads = _checked_input_grads(ctx, ctx.fn.backward(ctx, grad))
            if watch is not None:
                watch.check_backward(node, grad, input_grads)
            for parent, input_grad in zip(ctx.parents, input_grads):
                if input_grad is None:
                    continue
                previous = grads.get(id(parent))
                if previous is None:
                    grads[id(parent)] = input_grad
                elif id(parent) in summed:
                    np.add(previous, input_grad, out=previous)
                else:  # out of place: one op may return the same array for several inputs
                    # (np.add with out= keeps a 0-d sum an array; `+` would give a NumPy scalar)
                    grads[id(parent)] = np.add(previous, input_grad, out=np.empty_like(previous))
                    summed.add(id(parent))
            if not retain_graph:
                ctx.release()

    def _seed(self, gradient) -> np.ndarray:
        """dL/d(self) to start backward from: ``gradient``, or 1 for a one-element tensor."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True, or it ran under no_grad()"
            )
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element output; this tensor "
                    f"has shape {self.shape}: pass gradient= an array of that shape"
                )
            return np.ones(self.shape, dtype=self.dtype)
        seed = np.asarray(as_array(gradient))
        if seed.shape != self.shape:
            raise ValueError(f"backward(gradient=...) needs shape {self.shape}; got {seed.shape}")
        return seed.astype(self.dtype, copy=False)

    def _accumulate_grad(self, grad: np.ndarray) -> None:
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.dtype, copy=True)
        else:
            self.grad += grad

    # ----------------------------------------------------------------- operators
    # Each delegates to the functional op, where the forward and backward live.
    def __add__(self, other):
        return F.add(self, other)

    def __radd__(self, other):
        return F.add(other, self)

    def __sub__(self, other):
        return F.sub(self, other)

    def __rsub__(self, other):
        return F.sub(other, self)

    def __mul__(self, other):
        return F.mul(self, other)

    def __rmul__(self, other):
        return F.mul(other, self)

    def __truediv__(self, other):
        return F.div(self, other)

    def __rtruediv__(self, other):
        return F.div(other, self)

    def __neg__(self):
        return F.neg(self)

    def __pow__(self, exponent):
        return F.pow(self, exponent)

    def __rpow__(self, base):
        return F.pow(base, self)

    def __matmul__(self, other):
        return F.matmul(self, other)

    def __rmatmul__(self, other):
        return F.matmul(other, self)

    def __getitem__(self, index):
        return F.index(self, index)

    def exp(self):
        return F.exp(self)

    def log(self):
        return F.log(self)

    def relu(self):
        return F.relu(self)

    def sum(self, dim=None, keepdim=False):
        return F.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return F.mean(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return F.max(self, dim, keepdim)

    def reshape(self, *shape):
        return F.reshape(
            self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        )

    def transpose(self, dim0, dim1):
        return F.transpose(self, dim0, dim1)

    def permute(self, *dims):
        return F.permute(self, dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)

    def flatten(self, start_dim=0, end_dim=-1):
        return F.flatten(self, start_dim, end_dim)

    def to(self, dtype):
        """A copy in another floating dtype; gradients flow back cast to this tensor's dtype."""
        return F.cast(self, dtype)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)


def _topological_order(roots, inputs_of=lambda ctx: ctx.parents) -> list[Tensor | GraphNode]:
    """The graph nodes (GraphNodes and leaf Tensors) reached from ``roots`` (a list of them)
    through ``inputs_of(ctx)``, each after every node it was computed from. Backward follows
    ``ctx.parents`` (the inputs that need gradients); a trace follows ``ctx.inputs`` (every
    input, constants too).

    Iterative depth-first post-order, so deep graphs do not hit Python's recursion limit.
    """
    order: list[Tensor | GraphNode] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor | GraphNode, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        ctx = tensor._ctx
        if ctx is None:
            continue
        if ctx.released:
            raise RuntimeError(
                f"backward through {ctx.fn.__name__} a second time: its saved arrays were freed "
                "after the first backward; pass retain_graph=True to the first call"
            )
        for parent in inputs_of(ctx):
            if isinstance(parent, (Tensor, GraphNode)) and id(parent) not in visited:
                stack.append((parent, False))
    return order


class GraphNode(_GradientHooks):
    """An op output's place in the graph: the op's context, the shape and dtype its gradient
    must have, and the hooks to run on that gradient; not its values.

    Backward needs no op output's values but those the ops saved for themselves (a ReLU its
    output, a conv its input). A graph of Tensors would keep every intermediate array alive
    until backward (each conv's output before its ReLU, each Inception branch before the
    concat): a third of GoogLeNet's training-step memory. The node reaches its Tensor through
    a weak reference, to store ``.grad`` there after ``retain_grad()`` while the Tensor lives.
    """

    requires_grad = True
    is_leaf = False

    @property
    def _grad_node(self) -> GraphNode:
        return self

    def __init__(self, tensor: Tensor, ctx):
        self._ctx = ctx
        self.shape, self.dtype = tensor.data.shape, tensor.data.dtype
        self.retains_grad = False
        self._tensor = weakref.ref(tensor)

    def _accumulate_grad(self, grad: np.ndarray) -> None:
        tensor = self._tensor()
        if tensor is not None:
            tensor._accumulate_grad(grad)


def _checked_input_grads(ctx, input_grads) -> tuple[np.ndarray | None, ...]:
    """What ``ctx.fn.backward`` returned, held to the Function contract: one gradient per input,
    each of its input's shape and cast to its dtype; None for inputs that need none."""
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(ctx.parents):
        raise RuntimeError(
            f"{ctx.fn.__name__}.backward returned {len(input_grads)} gradients for "
            f"{len(ctx.parents)} inputs"
        )
    checked = []
    for index, (parent, input_grad) in enumerate(zip(ctx.parents, input_grads)):
        if parent is None or input_grad is None:
            checked.append(None)
            continue
        if input_grad.shape != parent.shape:
            raise RuntimeError(
                f"{ctx.fn.__name__}.backward returned a gradient of shape "
                f"{input_grad.shape} for input {index} of shape {parent.shape}"
            )
        checked.append(input_grad.astype(parent.dtype, copy=False))
    return tuple(checked)


def _check_differentiable(dtype: np.dtype) -> None:
    """Only floating-point tensors can require grad (a gradient is a real-valued rate)."""
    if dtype.kind != "f":
        raise TypeError(f"requires_grad=True needs a floating-point tensor; got dtype {dtype}")


def as_tensor(data) -> Tensor:
    """``data`` itself if it is a Tensor, else a new leaf Tensor holding it (an op's inputs)."""
    return data if isinstance(data, Tensor) else Tensor(data)


def as_array(data):
    """The array a Tensor holds, and anything else as it is: the inverse of ``as_tensor``, for
    arguments that may come as a Tensor or as plain data."""
    return data.data if isinstance(data, Tensor) else data


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """Make a leaf Tensor (float data defaults to float32, as in PyTorch)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)


def _shape_arg(shape) -> tuple[int, ...]:
    return tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)


# The functional ops import Tensor from this module, so they are bound after it is defined.
from tinynet import functional as F  # noqa: E402
