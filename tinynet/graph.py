"""``draw_graph``: the autograd graph behind a tensor as Graphviz DOT, with modules as clusters.

    out = model(x)
    graph = tinynet.draw_graph(out, model, depth=1)     # each top-level module one box
    graph.source                                        # DOT text: needs nothing
    graph.save("googlenet.svg")                         # .dot, .svg or .png

Op nodes show the op, its output shape and dtype; leaves show parameter (and buffer) names and
inputs; each module whose forward ran ops is a cluster nested in its parent's, so an Inception
block is one box holding four branch boxes joined by the concat. ``depth`` collapses every
module deeper than that into one node; ``module`` draws one module only. With
``grad_norms=True`` the next ``backward()`` records the norm of each value's gradient, shown
under its label.

Rendering SVG or PNG uses the system Graphviz ``dot`` when it is on PATH, else pygraphviz (the
``graph`` extra: its wheels bundle Graphviz). The graph is read from ``tinynet.trace``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynet.io import atomic_write
from tinynet.nn.module import Module
from tinynet.trace import LeafRecord, OpRecord, Trace, trace

FORMATS = (".dot", ".svg", ".png")
INSTALL_HINT = (
    "pip install 'tinynet[graph]' (pygraphviz, whose wheels bundle Graphviz), or install "
    "Graphviz so that `dot` is on PATH"
)
_STYLE = {  # node kind -> DOT attributes
    "op": 'shape=box, style="rounded,filled", fillcolor="#e8eef7"',
    "module": 'shape=box3d, style=filled, fillcolor="#c9d9ef"',
    "parameter": 'shape=box, style=filled, fillcolor="#fdf3c4"',
    "buffer": 'shape=box, style="filled,dashed", fillcolor="#fdf3c4"',
    "input": 'shape=oval, style=filled, fillcolor="#d5ecd4"',
}


class RendererNotFound(RuntimeError):
    """Neither the system ``dot`` nor pygraphviz is there to render SVG or PNG."""


def draw_graph(
    output,
    model: Module | None = None,
    *,
    depth: int | None = None,
    module: str | None = None,
    grad_norms: bool = False,
) -> Graph:
    """The graph behind ``output`` (a Tensor, or a tuple of them such as a model's outputs).

    model:      names parameters, buffers and the module clusters (without it: no clusters)
    depth:      module levels drawn open below the drawn root; deeper modules become one node
                each (depth=1: every child of the model, or of ``module``, is one node).
                None opens every level.
    module:     the dotted name of one module to draw (e.g. 'inception3a'); needs ``model``
    grad_norms: record the gradient norm of every drawn value during the next backward()
    """
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ValueError(f"draw_graph: depth must be an int >= 1 or None; got {depth!r}")
    record = trace(output, model)
    if module is not None:
        if model is None:
            raise ValueError("draw_graph: module= needs model= to know the module names")
        if module not in dict(model.named_modules()) or not module:
            raise ValueError(
                f"draw_graph: module must name a submodule of the model, such as "
                f"{_examples(model)}; got {module!r}"
            )
        if module not in record.module_types:
            raise ValueError(f"draw_graph: module {module!r} ran no op in this graph")
    graph = Graph(record, depth, module)
    if grad_norms:
        graph.record_grad_norms()
    return graph


def _examples(model: Module) -> str:
    names = [name for name, _ in model.named_children()][:3]
    return ", ".join(repr(name) for name in names) or "(this model has no submodules)"


@dataclass
class _Node:
    """One drawn node: an op, a leaf, a collapsed module, or a value from outside ``module``."""

    key: str
    kind: str
    lines: list[str]
    clusters: tuple[str, ...] = ()
    grad_of: str | None = None  # the trace id whose gradient norm this node shows
    members: list[str] = field(default_factory=list)  # the trace ids it stands for
    inputs: list[str] = field(default_factory=list)  # the trace ids it reads


@dataclass
class Graph:
    """A drawing of a ``Trace``: ``.source`` (DOT), ``.save(path)``, inline SVG in Jupyter."""

    trace: Trace
    depth: int | None = None
    module: str | None = None
    grad_norms: dict[str, float] = field(default_factory=dict)
    _handles: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ gradients
    def record_grad_norms(self) -> None:
        """Hook every traced tensor that requires grad, so that the next backward() stores
        ||dL/dvalue|| for it (each hook removes itself after one use)."""
        for record in (*self.trace.ops, *self.trace.leaves):
            value = record.tensor if isinstance(record, OpRecord) else record.value
            if getattr(value, "requires_grad", False):
                store = lambda grad, key=record.id: self._store(key, grad)
                self._handles[record.id] = value.register_hook(store)

    def _store(self, key: str, grad: np.ndarray) -> None:
        self.grad_norms[key] = float(np.linalg.norm(grad))
        self._handles.pop(key).remove()  # the model's parameters outlive this drawing

    # ------------------------------------------------------------------ DOT
    @property
    def source(self) -> str:
        nodes = self._nodes()
        keys = {member: node.key for node in nodes.values() for member in node.members}
        lines = [
            "digraph tinynet {",
            '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, newrank=true, ordering=in];',
            '  node [fontname="Helvetica", fontsize=10];',
            '  edge [color="#555555", arrowsize=0.6];',
        ]
        lines += self._clusters(nodes)
        edges = []
        for node in nodes.values():
            for source in node.inputs:
                edge = (keys.get(source), node.key)
                if edge[0] is not None and edge[0] != node.key and edge not in edges:
                    edges.append(edge)
        lines += [f"  {_quote(a)} -> {_quote(b)};" for a, b in edges]
        return "\n".join(lines + ["}"]) + "\n"

    def _nodes(self) -> dict[str, _Node]:
        """Every drawn node by key, with the trace ids it stands for in ``node.members``."""
        nodes: dict[str, _Node] = {}
        selected = [op for op in self.trace.ops if self._inside(op.scope)]
        producers = {op.id: op for op in self.trace.ops}
        leaves = {leaf.id: leaf for leaf in self.trace.leaves}
        for op in selected:
            chain = self._chain(op.scope)
            clusters, group = self._collapse(chain)
            if group is None:
                lines = _value_lines(op.op, op)
                node = nodes[op.id] = _Node(op.id, "op", lines, clusters, op.id)
            else:
                node = nodes.setdefault(group, _Node(group, "module", [], clusters))
                node.grad_of = op.id  # ops come in topological order: the last is the output
                node.lines = [f"{group}: {self.trace.module_types[group]}", _shape(op)]
            node.members.append(op.id)
            node.inputs += [i for i in op.inputs if i is not None]
        drawn = {op.id for op in selected}
        for node in list(nodes.values()):
            for source in node.inputs:
                if source in producers and source not in drawn:
                    self._add_outside(nodes, producers[source])
                elif source in leaves:
                    self._add_leaf(nodes, leaves[source])
        for node in nodes.values():
            if node.kind == "module" and self._collapsed_parameters(node.key):
                node.lines.append(f"{self._collapsed_parameters(node.key):,} parameters")
            if node.grad_of in self.grad_norms:
                node.lines.append(f"grad norm {self.grad_norms[node.grad_of]:.3g}")
        return nodes

    def _inside(self, scope: tuple[str, ...]) -> bool:
        return self.module is None or self.module in scope

    def _chain(self, scope: tuple[str, ...]) -> tuple[str, ...]:
        """The modules below the drawn root, outermost first."""
        return scope if self.module is None else scope[scope.index(self.module) + 1 :]

    def _collapse(self, chain: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
        """(the open clusters a node sits in, the collapsed module it belongs to or None)."""
        root = () if self.module is None else (self.module,)
        if self.depth is None or len(chain) < self.depth:
            return root + chain, None
        return root + chain[: self.depth - 1], chain[self.depth - 1]

    def _add_outside(self, nodes: dict[str, _Node], op: OpRecord) -> None:
        if op.id not in nodes:
            where = op.scope[-1] if op.scope else op.op
            lines = _value_lines(f"{where} output", op)
            nodes[op.id] = _Node(op.id, "input", lines, grad_of=op.id, members=[op.id])

    def _add_leaf(self, nodes: dict[str, _Node], leaf: LeafRecord) -> None:
        if leaf.id in nodes or leaf.kind == "constant":
            return
        owner = leaf.name.rpartition(".")[0] if leaf.kind in ("parameter", "buffer") else ""
        clusters, group = (), None
        if owner:  # a parameter sits in its module's box: the scope its module's ops ran in
            parts = owner.split(".")
            scope = tuple(".".join(parts[: k + 1]) for k in range(len(parts)))
            if self._inside(scope):
                clusters, group = self._collapse(self._chain(scope))
        if group is not None:
            return  # inside a collapsed module: counted in its parameters
        lines = _value_lines(leaf.name, leaf)
        nodes[leaf.id] = _Node(leaf.id, leaf.kind, lines, clusters, leaf.id, [leaf.id])

    def _collapsed_parameters(self, group: str) -> int:
        prefix = group + "."
        return sum(
            int(np.prod(leaf.shape))
            for leaf in self.trace.leaves
            if leaf.kind == "parameter" and leaf.name.startswith(prefix)
        )

    def _clusters(self, nodes: dict[str, _Node]) -> list[str]:
        """The nodes, each written inside its nest of ``subgraph cluster_...`` blocks."""
        tree: dict = {}
        for node in nodes.values():
            branch = tree
            for name in node.clusters:
                branch = branch.setdefault(name, {})
            branch.setdefault(None, []).append(node)
        return self._write_cluster(_dissolve_single_op_clusters(tree), "  ")

    def _write_cluster(self, branch: dict, indent: str) -> list[str]:
        lines = []
        for node in branch.get(None, []):
            label = "\\n".join(_escape(line) for line in node.lines)
            lines.append(f'{indent}{_quote(node.key)} [label="{label}", {_STYLE[node.kind]}];')
        for name, inner in branch.items():
            if name is None:
                continue
            kind = self.trace.module_types.get(name, "")
            lines += [
                f"{indent}subgraph {_quote('cluster_' + name)} {{",
                f'{indent}  label="{_escape(name)}: {kind}"; labeljust=l; style="rounded"; '
                f'color="#7f9cc4";',
                *self._write_cluster(inner, indent + "  "),
                f"{indent}}}",
            ]
        return lines

    # ------------------------------------------------------------------ output
    def render(self, format: str) -> bytes:
        """The drawing as ``format`` ('svg' or 'png') bytes."""
        return render(self.source, format)

    def save(self, path) -> Path:
        """Write the graph to ``path``: .dot (the source), .svg or .png (rendered)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(
                f"save: {path} must end in one of {', '.join(FORMATS)}; got {suffix or 'none'!r}"
            )
        data = self.source.encode() if suffix == ".dot" else self.render(suffix[1:])
        with atomic_write(path) as file:
            file.write(data)
        return path

    def _repr_svg_(self) -> str | None:
        try:
            return self.render("svg").decode()
        except RendererNotFound:
            return None  # Jupyter then shows repr(), which says what to install

    def __repr__(self) -> str:
        counts = f"{len(self.trace.ops)} ops, {len(self.trace.leaves)} leaves"
        drawn = "" if renderer_available() else f"; to draw it as SVG or PNG: {INSTALL_HINT}"
        return f"<tinynet Graph: {counts}; .source is its DOT text{drawn}>"


def _dissolve_single_op_clusters(branch: dict) -> dict:
    """The cluster tree without boxes around a single op (a Conv2d module around its conv):
    such a box says nothing the op's label does not; its nodes move up to the parent."""
    kept = {None: list(branch.get(None, []))}
    for name, inner in branch.items():
        if name is None:
            continue
        inner = _dissolve_single_op_clusters(inner)
        if _count_ops(inner) == 1:
            kept[None] += _all_nodes(inner)
        else:
            kept[name] = inner
    return kept


def _count_ops(branch: dict) -> int:
    return sum(node.kind in ("op", "module") for node in _all_nodes(branch))


def _all_nodes(branch: dict) -> list[_Node]:
    nodes = list(branch.get(None, []))
    for name, inner in branch.items():
        if name is not None:
            nodes += _all_nodes(inner)
    return nodes


def renderer_available() -> bool:
    return shutil.which("dot") is not None or importlib.util.find_spec("pygraphviz") is not None


def render(source: str, format: str) -> bytes:
    """DOT ``source`` rendered to ``format`` by the system ``dot`` or by pygraphviz."""
    dot = shutil.which("dot")
    if dot is not None:
        done = subprocess.run([dot, f"-T{format}"], input=source.encode(), capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"dot -T{format} failed: {done.stderr.decode().strip()}")
        return done.stdout
    try:
        import pygraphviz
    except ImportError:
        raise RendererNotFound(f"rendering .{format} needs Graphviz: {INSTALL_HINT}") from None
    return pygraphviz.AGraph(string=source).draw(format=format, prog="dot")


def _value_lines(title: str, record: OpRecord | LeafRecord) -> list[str]:
    return [title, _shape(record)]


def _shape(record: OpRecord | LeafRecord) -> str:
    return f"{tuple(record.shape)} {record.dtype}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(key: str) -> str:
    return f'"{_escape(key)}"'
