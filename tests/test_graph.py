"""trace() and draw_graph(): the DOT text of an Inception block (nodes, shapes, clusters),
collapsing by depth, gradient norms, rendering to files, and one-line errors; `tinynet graph`."""

import re
import subprocess
import sys

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
from tinynet import nn
from tinynet.graph import render
from tinynet.models.googlenet import Inception


class Block(nn.Module):
    """A stem conv, then inception3a as in the paper's table at a tenth of its width."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.inception3a = Inception(8, 4, 2, 6, 1, 3, 3)

    def forward(self, x):
        return self.inception3a(self.stem(x))


@pytest.fixture
def block_and_output():
    tinynet.manual_seed(0)
    model = Block()
    out = model(tinynet.tensor(np.ones((1, 3, 5, 5), np.float32), requires_grad=True))
    return model, out


def _labels(source: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*"([\w.]+)" \[label="([^"]*)"', source, flags=re.M))


def test_inception_block_is_one_cluster_holding_four_branches_joined_by_the_concat(
    block_and_output,
):
    model, out = block_and_output
    source = tinynet.draw_graph(out, model).source
    clusters = re.findall(r'subgraph "cluster_([\w.]+)"', source)
    assert clusters[0] == "inception3a"
    branches = [c for c in clusters if c.count(".") == 1]
    assert branches == [f"inception3a.branch{k}" for k in (1, 2, 3, 4)]
    labels = _labels(source)
    concat = [key for key, label in labels.items() if label.startswith("Concat")]
    assert labels[concat[0]] == "Concat\\n(1, 16, 5, 5) float32"
    # the concat sits directly in the block's box and reads one ReLU per branch
    block = source[source.index('subgraph "cluster_inception3a" {'):]
    assert block.index(f'"{concat[0]}"') < block.index("subgraph", 1)
    feeding = re.findall(rf'"(\w+)" -> "{concat[0]}"', source)
    assert [labels[k].split("\\n")[0] for k in feeding] == ["ReLU"] * 4
    assert [labels[k].split("\\n")[1] for k in feeding] == [
        "(1, 4, 5, 5) float32", "(1, 6, 5, 5) float32", "(1, 3, 5, 5) float32",
        "(1, 3, 5, 5) float32",
    ]  # fmt: skip
    assert "inception3a.branch2.1.conv.weight\\n(6, 2, 3, 3) float32" in labels.values()
    assert "input\\n(1, 3, 5, 5) float32" in labels.values()
    assert sum(label.startswith("Conv2d") for label in labels.values()) == 7


def test_depth_collapses_modules_into_one_node_each(block_and_output):
    model, out = block_and_output
    labels = _labels(tinynet.draw_graph(out, model, depth=1).source)
    assert labels["inception3a"] == "inception3a: Inception\\n(1, 16, 5, 5) float32\\n" + (
        f"{sum(p.size for p in model.inception3a.parameters()):,} parameters"
    )
    assert labels["stem"].startswith("stem: Conv2d")
    source = tinynet.draw_graph(out, model, depth=2).source
    assert re.findall(r'subgraph "cluster_([\w.]+)"', source) == ["inception3a"]
    labels = _labels(source)
    # 1x1 reduce 8 -> 2 (16 + 2), then 3x3 2 -> 6 (108 + 6)
    assert labels["inception3a.branch2"] == (
        "inception3a.branch2: Sequential\\n(1, 6, 5, 5) float32\\n132 parameters"
    )
    for k in (1, 2, 3, 4):
        assert re.search(rf'"inception3a\.branch{k}" -> "op\d+";', source)


def test_module_draws_one_block_with_its_outside_input(block_and_output):
    model, out = block_and_output
    labels = _labels(tinynet.draw_graph(out, model, module="inception3a").source)
    assert "stem output\\n(1, 8, 5, 5) float32" in labels.values()
    assert not any(label.startswith("stem.weight") for label in labels.values())


def test_grad_norms_are_those_of_the_gradients_backward_computes(block_and_output):
    model, out = block_and_output
    graph = tinynet.draw_graph(out, model, grad_norms=True)
    (out * out).sum().backward()
    labels = _labels(graph.source)
    weight = model.inception3a.branch1.conv.weight
    expected = f"grad norm {np.linalg.norm(weight.grad):.3g}"
    assert labels["leaf" + _leaf_index(graph, "inception3a.branch1.conv.weight")].endswith(expected)
    output_norm = f"grad norm {np.linalg.norm(2 * out.data):.3g}"
    assert any(label.startswith("Concat") and label.endswith(output_norm) for label in
               labels.values())  # fmt: skip
    assert weight._hooks == {}  # the drawing leaves no hook on the model behind


def _leaf_index(graph, name: str) -> str:
    return next(leaf.id for leaf in graph.trace.leaves if leaf.name == name).removeprefix("leaf")


def test_trace_records_params_scopes_and_inputs_for_an_exporter(block_and_output):
    model, out = block_and_output
    trace = tinynet.trace(out, model)
    conv = next(op for op in trace.ops if op.scope[-1:] == ("inception3a.branch2.1.conv",))
    assert conv.op == "Conv2d" and conv.params == {"stride": (1, 1), "padding": ((1, 1), (1, 1))}
    assert [trace[i].name for i in conv.inputs[1:]] == [
        "inception3a.branch2.1.conv.weight", "inception3a.branch2.1.conv.bias",
    ]  # fmt: skip
    assert trace[conv.inputs[0]].op == "ReLU"
    assert trace.ops[-1].op == "Concat" and trace.outputs == (trace.ops[-1].id,)
    assert trace.module_types["inception3a"] == "Inception"
    positions = {op.id: k for k, op in enumerate(trace.ops)}
    for k, op in enumerate(trace.ops):  # topological: every input op comes earlier
        assert all(positions[i] < k for i in op.inputs if i in positions)


def test_saving_writes_valid_dot_svg_and_png(block_and_output, tmp_path):
    model, out = block_and_output
    graph = tinynet.draw_graph(out, model)
    graph.save(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == graph.source
    pytest.importorskip("pygraphviz")
    graph.save(tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert svg.rstrip().endswith("</svg>") and "inception3a: Inception" in svg
    graph.save(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert graph._repr_svg_().rstrip().endswith("</svg>")


def test_without_a_renderer_the_error_says_what_to_install(monkeypatch, block_and_output):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    with pytest.raises(RuntimeError, match=r"needs Graphviz: pip install 'tinynet\[graph\]'"):
        render("digraph { a -> b }", "svg")
    graph = tinynet.draw_graph(*block_and_output[::-1])
    assert graph._repr_svg_() is None  # Jupyter then shows the repr, which says what to install
    assert "pip install 'tinynet[graph]'" in repr(graph)


def test_bad_input_gives_one_line_errors(block_and_output, tmp_path):
    model, out = block_and_output
    with pytest.raises(TypeError, match="output must be a tinynet Tensor .*; got ndarray"):
        tinynet.draw_graph(out.data, model)
    with pytest.raises(ValueError, match=r"must end in one of \.dot, \.svg, \.png; got '\.gif'"):
        tinynet.draw_graph(out, model).save(tmp_path / "g.gif")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="module must name a submodule .* got 'inception9z'"):
        tinynet.draw_graph(out, model, module="inception9z")
    with pytest.raises(ValueError, match="no recorded graph"):
        with tinynet.no_grad():
            tinynet.draw_graph(model(tinynet.tensor(np.ones((1, 3, 5, 5), np.float32))))
    out.sum().backward()
    with pytest.raises(RuntimeError, match="already freed the graph"):
        tinynet.draw_graph(out, model)


def test_backward_hook_plumbing_is_not_drawn(block_and_output):
    model, _ = block_and_output
    model.inception3a.register_full_backward_hook(lambda *args: None)
    out = model(tinynet.tensor(np.ones((1, 3, 5, 5), np.float32), requires_grad=True))
    assert [op.op for op in tinynet.trace(out, model).ops].count("BackwardHookIdentity") == 0


def test_graph_command_writes_the_file_and_refuses_unknown_modules(tmp_path):
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "tinynet", "graph", "--model", "small", "--width", "0.1", *args],
        capture_output=True, text=True,
    )  # fmt: skip
    done = run("--module", "inception3a", "--backward", "--out", str(tmp_path / "g.dot"))
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "g.dot").read_text()
    assert 'subgraph "cluster_inception3a"' in source and "grad norm" in source
    done = run("--module", "inception9z", "--out", str(tmp_path / "x.dot"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "--module must be one of conv1" in done.stderr and "got 'inception9z'" in done.stderr
