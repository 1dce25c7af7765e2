"""``tinynet.onnx.load`` on ONNX as PyTorch's exporter writes it with the defaults a user gets, in
its TorchScript mode (``dynamo=False``: the shape arithmetic of ``x.view(x.size(0), -1)`` and of
``F.local_response_norm``, with an If) and its torch.export mode (``dynamo=True``: LRN as Pad,
Pow and a pooling over an added axis, the weights in ``model.onnx.data`` beside the model), for
the paper GoogLeNet (LRN, ceil-mode pools), torchvision's own GoogLeNet and a CNN that flattens
with ``view``: each equals ONNX Runtime on the same file at batch sizes 1 and 3 (the batch axis
stays free), the paper's gradients equal PyTorch's, and ``tinynet predict`` reads the files.
Then the folding on hand-made graphs against ONNX Runtime, and the external-data rule: read from
the model's own folder only, every other case a one-line error naming the file."""

import copy
import dataclasses
import os
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_onnx_import import (
    TOLERANCE,
    assert_differentiates_as_torch,
    load_with_capped_memory,
    relative_error,
    tiny_model,
)

import tinynet
from tinynet.cli import main
from tinynet.models.googlenet import PAPER

from strategies import shapes
from upstream import upstream_torchvision

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tinynet.onnx  # noqa: E402 - needs the onnx package checked above
from tinynet.onnx import fold  # noqa: E402

BATCHES = (1, 3, 1)  # back to 1: the run with the plan kept for that shape


def view_flatten_cnn(torch):
    nn = torch.nn

    class ViewFlattenCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)
            )
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            x = self.features(x)
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    return ViewFlattenCNN()


def paper_googlenet(torch):
    from torch_googlenet import TorchGoogLeNet

    torch.manual_seed(0)
    return TorchGoogLeNet(dataclasses.replace(PAPER, width=0.125, aux_logits=False))


def torchvision_googlenet(torch):
    upstream_torchvision()
    from torchvision.models.googlenet import googlenet

    torch.manual_seed(0)
    return googlenet()  # torchvision's defaults: random weights, aux heads (unused in eval)


# name -> (builder, input side): 64 is about the least GoogLeNet takes (five stride-2 stages)
MODELS = {
    "view-flatten-cnn": (view_flatten_cnn, 15),
    "paper-googlenet": (paper_googlenet, 64),
    "torchvision-googlenet": (torchvision_googlenet, 64),
}
MODES = {"torchscript": False, "torch.export": True}
# What each mode writes, so the test shows the files hold the arithmetic it is about.
WRITTEN = {
    ("view-flatten-cnn", "torchscript"): {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"},
    ("paper-googlenet", "torchscript"): {"Shape", "Gather", "ConstantOfShape", "Slice",
                                         "Transpose", "Cast", "Pad", "AveragePool", "Equal",
                                         "If", "Pow"},  # fmt: skip
    ("paper-googlenet", "torch.export"): {"Pad", "AveragePool", "Squeeze", "Pow", "ReduceMean"},
    ("torchvision-googlenet", "torch.export"): {"ReduceMean", "Reshape"},
}


@pytest.fixture(scope="session")
def exported(torch, tmp_path_factory):
    """``export(name, mode)`` -> (the PyTorch model, the .onnx path, the input side), each
    exported once a session, to a folder of its own."""
    cache = {}

    def export(name, mode):
        if (name, mode) not in cache:
            build, size = MODELS[name]
            path = tmp_path_factory.mktemp(f"{name}-{mode}") / "model.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation, tracer and init-change notes
                model = build(torch).eval()
                torch.onnx.export(  # batch 2: torch.export would fix an axis of size 1
                    model, (torch.zeros(2, 3, size, size),), str(path), dynamo=MODES[mode],
                    input_names=["input"], output_names=["output"],
                    dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                )  # fmt: skip
            cache[name, mode] = model, path, size
        return cache[name, mode]

    return export


def ops_in(path) -> set:
    graph = onnx.load(path, load_external_data=False).graph
    return {node.op_type for node in graph.node}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_pytorch_exports_equal_onnx_runtime_at_any_batch_size(exported, name, mode):
    _, path, size = exported(name, mode)
    assert WRITTEN.get((name, mode), set()) <= ops_in(path)
    if mode == "torch.export":
        assert (path.parent / "model.onnx.data").is_file()  # the weights, beside the model
    ours = tinynet.onnx.load(path)
    runtime = ort.InferenceSession(str(path))
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        images = rng.standard_normal((batch, 3, size, size), np.float32)
        with tinynet.no_grad():
            output = ours(images).data
        assert output.shape[0] == batch
        assert relative_error(output, runtime.run(None, {"input": images})[0]) <= TOLERANCE


@pytest.mark.parametrize("mode", MODES)
def test_the_paper_googlenet_differentiates_as_pytorch(exported, torch, mode):
    """Gradients of sum(output * weights) for the input and every weight, in float64, through
    the exports' Pad, pooling over an added axis, Pow and Div."""
    model, path, size = exported("paper-googlenet", mode)
    rng = np.random.default_rng(1)
    images, weights = rng.standard_normal((2, 3, size, size)), rng.standard_normal((2, 1000))
    # torch.export lifts LRN's scalars into initializers: constants, not weights, in tinynet
    assert_differentiates_as_torch(torch, tinynet.onnx.load(path).double(),
                                   copy.deepcopy(model).double(), images, weights)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_cli_predict_takes_pytorch_exports(exported, tmp_path, capsys, mode):
    Image = pytest.importorskip("PIL.Image")
    _, path, size = exported("torchvision-googlenet", mode)
    image = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "im.png")
    capsys.readouterr()
    assert main(["predict", str(path), str(tmp_path / "im.png"), "--top", "2"]) == 0
    pixels = (image.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
    logits = ort.InferenceSession(str(path)).run(None, {"input": pixels})[0]
    best = np.argsort(-logits[0])[:2]
    shown = capsys.readouterr().out
    assert shown.startswith(f"{tmp_path / 'im.png'}: {best[0]} ") and f", {best[1]} " in shown


# ------------------------------------------------------------------ folding, against ONNX Runtime
def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def model_file(path, nodes, initializers, input_shape, output_shape, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], initializers,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return path


def assert_equals_runtime(path, input_shape, batches=BATCHES):
    ours = tinynet.onnx.load(path)
    runtime = ort.InferenceSession(str(path))
    rng = np.random.default_rng(3)
    for batch in batches:
        x = rng.standard_normal((batch, *input_shape), np.float32)
        with tinynet.no_grad():
            output = ours(x).data
        expected = runtime.run(None, {"x": x})[0]
        assert output.shape == expected.shape
        assert relative_error(output, expected) <= TOLERANCE
    return ours


def test_shape_arithmetic_folds_per_input_shape_as_runtime_computes_it(tmp_path):
    """Every fold op, and an If on the batch size: batch 1 takes one branch, batch 3 the other,
    each from its own plan."""
    make = helper.make_node
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    nodes = [
        make("Shape", ["x"], ["shape"]),  # [N, 2, 3, 4]
        make("Gather", ["shape", "zero"], ["n"], axis=0),
        make("Unsqueeze", ["n", "axis0"], ["n1"]),
        make("Concat", ["n1", "minus1"], ["target"], axis=0),
        make("Reshape", ["x", "target"], ["flat"]),  # (N, 24)
        make("Slice", ["shape", "from1", "to9"], ["sizes"]),  # [2, 3, 4]
        make("Shape", ["flat"], ["flat_shape"], start=1),  # [24]
        make("Squeeze", ["flat_shape", "axis0"], ["count"]),
        make("Range", ["zero", "count", "step"], ["ramp"]),  # 0..23
        make("Div", ["ramp", "twos"], ["half"]),
        make("Mul", ["half", "twos"], ["rounded"]),
        make("Equal", ["rounded", "ramp"], ["even"]),
        make("ConstantOfShape", ["flat_shape"], ["filled"], value=two),
        make("Cast", ["ramp"], ["ramp_float"], to=TensorProto.FLOAT),
        make("Where", ["even", "filled", "ramp_float"], ["weights"]),
        make("Mul", ["flat", "weights"], ["weighted"]),
        make("Equal", ["n", "zero_one"], ["is_one"]),
        make("If", ["is_one"], ["branched"], name="by_batch",
             then_branch=helper.make_graph(
                 [make("Mul", ["weighted", "weights"], ["then_out"])], "then", [],
                 [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)]),
             else_branch=helper.make_graph(
                 [make("Sub", ["weighted", "weights"], ["else_out"])], "else", [],
                 [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)])),
        make("Concat", ["n1", "sizes"], ["back"], axis=0),
        make("Reshape", ["branched", "back"], ["y"]),
    ]  # fmt: skip
    initializers = [
        const("zero", 0), const("axis0", [0]), const("minus1", [-1]), const("from1", [1]),
        const("to9", [9]), const("step", 1), const("twos", 2), const("zero_one", 1),
    ]  # fmt: skip
    path = model_file(tmp_path / "fold.onnx", nodes, initializers, ["N", 2, 3, 4], ["N", 2, 3, 4])
    model = assert_equals_runtime(path, (2, 3, 4))
    assert len(model._plans) == 2  # one plan a shape: the data ops with folded arguments
    for plan in model._plans.values():
        assert {node[0] for node in plan.nodes} <= {"Reshape", "Mul", "Sub", "Identity"}


def test_data_ops_around_the_exports_equal_runtime(tmp_path):
    """Pad, Transpose, Unsqueeze, Squeeze, Slice (backwards), Pow, Cast, ReduceMean and Concat
    on data, with broadcasting Add, Mul and Div."""
    make = helper.make_node
    nodes = [
        make("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),  # (N, 3, 4, 2)
        make("Pad", ["t", "pads", "fill"], ["padded"], mode="constant"),  # (N, 4, 4, 3)
        make("Unsqueeze", ["padded", "axis1"], ["u"]),
        make("Squeeze", ["u", "axis1"], ["s"]),
        make("Slice", ["s", "starts", "ends", "axes", "steps"], ["reversed"]),
        make("Mul", ["reversed", "reversed"], ["square"]),
        make("Add", ["square", "bias"], ["shifted"]),
        make("Pow", ["shifted", "half"], ["root"]),
        make("Div", ["reversed", "root"], ["ratio"]),
        make("Cast", ["ratio"], ["same"], to=TensorProto.FLOAT),
        make("ReduceMean", ["same", "axes_mean"], ["mean"], keepdims=1),
        make("Concat", ["same", "mean"], ["y"], axis=2),  # (N, 4, 5, 3)
    ]  # fmt: skip
    initializers = [
        const("pads", [0, 1, 0, 0, 0, 0, 0, 1]), const("fill", 0.5, np.float32),
        const("axis1", [1]), const("starts", [-1]), const("ends", [-(2**63) + 1]),
        const("axes", [1]), const("steps", [-1]), const("bias", [1.0, 2.0, 3.0], np.float32),
        const("half", 0.5, np.float32), const("axes_mean", [2]),
    ]  # fmt: skip
    path = model_file(tmp_path / "data.onnx", nodes, initializers, ["N", 2, 3, 4], ["N", 4, 5, 3],
                      opset=18)  # fmt: skip
    assert_equals_runtime(path, (2, 3, 4))


BOUNDS = st.one_of(st.integers(-8, 8), st.sampled_from([-(2**63), -(2**63) + 1, 2**63 - 1,
                                                         2**31 - 1, -(2**31)]))


@st.composite
def slices_of(draw):
    """A shape and a Slice of it: each of some axes (negative ones too) with a start and an end
    anywhere, past either end included, and a step of either sign."""
    shape = draw(shapes(min_dims=1, max_dims=3))
    rank = len(shape)
    axes = draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank,
                         unique_by=lambda a: a % rank))  # fmt: skip
    count = len(axes)
    starts, ends = (draw(st.lists(BOUNDS, min_size=count, max_size=count)) for _ in range(2))
    steps = draw(st.lists(st.sampled_from([-3, -2, -1, 1, 2, 3]), min_size=count,
                          max_size=count))  # fmt: skip
    return shape, starts, ends, axes, steps


@given(case=slices_of())
def test_slice_clamps_as_runtime_does(case):
    """ONNX's Slice clamps starts and ends to each axis, differently for negative steps, and
    ONNX Runtime reads an end of INT_MAX as "to the end" whatever the step's sign; tinynet
    computes the index once (fold.slices) for data and for folded values alike. (onnx's own
    ReferenceEvaluator is no oracle here: it slices as Python does, so a start below -size with
    a negative step gives it nothing where the operator's text and ONNX Runtime give the first
    element.)"""
    shape, starts, ends, axes, steps = case
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [const(n, v) for n, v in zip(("starts", "ends", "axes", "steps"),
                                     (starts, ends, axes, steps))]),
        opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    wanted = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    index = fold.slices(shape, *(np.array(v) for v in (starts, ends, axes, steps)))
    np.testing.assert_array_equal(x[index], wanted)


@pytest.mark.parametrize(
    "op, kernel, input_shape, output_shape",
    [
        ("AveragePool", [5, 1, 1], [1, 9, 3, 4], [1, 5, 3, 4]),  # torch.export's LRN
        ("MaxPool", [3, 1, 1], [2, 6, 3, 4], [2, 4, 3, 4]),
        ("AveragePool", [1, 3, 2], [2, 3, 5, 4], [2, 3, 3, 3]),  # a 2-D window in a 3-D pool
        ("MaxPool", [3], [2, 7], [2, 5]),
    ],
)
def test_pools_over_one_and_three_axes_equal_runtime(
    tmp_path, op, kernel, input_shape, output_shape
):
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=kernel, strides=[1] * len(kernel))
    path = model_file(tmp_path / "pool.onnx", [node], [], ["N", *input_shape],
                      ["N", *output_shape])  # fmt: skip
    assert_equals_runtime(path, tuple(input_shape))


def test_shape_ops_on_data_are_one_line_errors(tmp_path):
    """An If whose condition, or an Equal whose input, is computed from the data."""
    branch = lambda out: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["x"], [out])], out, [],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])  # fmt: skip
    for condition, label, expected in [
        (helper.make_node("Identity", ["m"], ["positive"], name="cond"), "node 'by_value' (If)",
         "the condition depends on the input's values; tinynet takes an If's branch from shapes "
         "and constants only"),
        (helper.make_node("Equal", ["m", "zero"], ["positive"], name="cond"),
         "node 'cond' (Equal)", "an input is computed from the data; tinynet runs Equal on "
         "shapes and constants only"),
    ]:  # fmt: skip
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
            condition,
            helper.make_node("If", ["positive"], ["y"], name="by_value",
                             then_branch=branch("a"), else_branch=branch("b")),
        ]  # fmt: skip
        path = model_file(tmp_path / "if.onnx", nodes, [const("zero", 0.0, np.float32)],
                          ["N", 2], ["N", 2])  # fmt: skip
        model = tinynet.onnx.load(path)
        with pytest.raises(tinynet.onnx.OnnxImportError) as error:
            model(np.ones((1, 2), np.float32))
        assert str(error.value) == f"{path}: {label}: {expected}"


def test_a_folded_value_past_its_budget_is_refused_before_allocation(tmp_path):
    nodes = [
        helper.make_node("ConstantOfShape", ["huge"], ["filled"], name="fill"),
        helper.make_node("Add", ["x", "filled"], ["y"]),
    ]
    path = model_file(tmp_path / "fill.onnx", nodes, [const("huge", [1 << 16, 1 << 16])],
                      ["N", 2], ["N", 2])  # fmt: skip
    assert (f"OnnxImportError {path}: node 'fill' (ConstantOfShape): the result would hold "
            "4294967296 elements, more than the 1048576 left for folded values"
            ) in load_with_capped_memory(path, (1, 2))  # fmt: skip


# ------------------------------------------------------------------ external data
WEIGHTS = np.array([1.5, -2.0], np.float32)


def external_model(folder, location, offset=None, length=None, name="model.onnx"):
    """A model adding an initializer 'w' stored in ``location`` beside it."""
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset, "length": length}
    for key, value in entries.items():
        if value is not None:
            tensor.external_data.add(key=key, value=str(value))
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    path = folder / name
    path.write_bytes(tiny_model([node], [tensor]).SerializeToString())
    return path


def test_external_data_in_the_models_folder_is_read(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"\xff" * 8 + WEIGHTS.tobytes() + b"\xff" * 4)
    os.symlink("sub/w.bin", tmp_path / "link.bin")  # a symlink that stays in the folder
    monkeypatch.chdir(tmp_path / "sub")  # read beside the model, not from the working folder
    for location in ("sub/w.bin", "link.bin"):
        path = external_model(tmp_path, location, offset=8, length=8)
        model = tinynet.onnx.load(path)
        np.testing.assert_array_equal(model.w.data, WEIGHTS)
        runtime = ort.InferenceSession(str(path)).run(None, {"x": np.ones((3, 2), np.float32)})
        np.testing.assert_array_equal(model(np.ones((3, 2), np.float32)).data, runtime[0])
    path = external_model(tmp_path, "sub/w.bin", offset=8)  # no length: the tensor's size
    np.testing.assert_array_equal(tinynet.onnx.load(path).w.data, WEIGHTS)


def refused_cases(tmp_path):
    """(model path, what the error says) for each external tensor that is not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(WEIGHTS.tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(WEIGHTS.tobytes())
    os.symlink(outside / "secret.bin", folder / "link.bin")
    os.symlink(outside, folder / "linked_folder")
    os.mkfifo(folder / "fifo.bin")
    cases = {
        "parent": ("../outside/secret.bin", {}, "is not a relative name inside the model's "
                   "folder (without '..')"),
        "absolute": (str(outside / "secret.bin"), {}, "is not a relative name inside"),
        "symlink": ("link.bin", {}, "leads outside the model's folder (through a symlink)"),
        "symlinked folder": ("linked_folder/secret.bin", {}, "leads outside the model's folder"),
        "missing": ("gone.bin", {}, "cannot open its external data file 'gone.bin' (No such "
                    "file or directory)"),
        "fifo": ("fifo.bin", {}, "its external data 'fifo.bin' is not a regular file"),
        "past the end": ("w.bin", {"offset": 4}, "bytes 4 to 12 of 'w.bin', ends past the "
                         "file's 8 bytes"),
        "wrong length": ("w.bin", {"length": 4}, "its external data is 4 bytes; its shape [2] "
                         "needs 8"),
        "not a number": ("w.bin", {"offset": "-1"}, "offset '-1' is not a byte count"),
        "the folder": (".", {}, "its external data '.' is not a regular file"),
    }  # fmt: skip
    return {
        case: (external_model(folder, location, name=f"{k}.onnx", **where), expected)
        for k, (case, (location, where, expected)) in enumerate(cases.items())
    }


def test_external_data_elsewhere_is_a_one_line_error_naming_the_file(tmp_path):
    for case, (path, expected) in refused_cases(tmp_path).items():
        with pytest.raises(tinynet.onnx.OnnxImportError) as error:
            tinynet.onnx.load(path)
        message = str(error.value)
        assert message.startswith(f"{path}: initializer 'w': "), case
        assert expected in message and "\n" not in message, (case, message)


def test_the_cli_refuses_external_data_elsewhere_in_one_line_writing_nothing(tmp_path, capsys):
    path, expected = refused_cases(tmp_path)["parent"]
    out = tmp_path / "weights.npz"
    for command in (["convert", str(path), str(out)], ["predict", str(path), str(path)]):
        capsys.readouterr()
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err == f"tinynet {command[0]}: error: {path}: initializer 'w': its external " \
            f"data file '../outside/secret.bin' {expected}\n"
    assert not out.exists()


def test_external_tensors_sharing_bytes_and_models_without_a_file_are_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(WEIGHTS.tobytes())
    path = external_model(tmp_path, "w.bin")
    proto = onnx.load(path, load_external_data=False)
    second = copy.deepcopy(proto.graph.initializer[0])
    second.name = "v"
    proto.graph.initializer.append(second)
    proto.graph.node.append(helper.make_node("Add", ["y", "v"], ["z"]))
    proto.graph.output[0].name = "z"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(tinynet.onnx.OnnxImportError, match=r"initializer 'v': the external "
                       r"tensors read 16 bytes from 'w.bin', which holds 8: tensors share bytes"):
        tinynet.onnx.load(path)
    with pytest.raises(tinynet.onnx.OnnxImportError, match=r"^<model>: initializer 'w': its data "
                       r"is in the external file 'w.bin', and a model not read from a file"):
        tinynet.onnx.OnnxModule(proto)


def test_an_external_tensor_larger_than_its_file_is_refused_before_allocation(tmp_path):
    (tmp_path / "w.bin").write_bytes(WEIGHTS.tobytes())
    path = external_model(tmp_path, "w.bin")
    proto = onnx.load(path, load_external_data=False)
    proto.graph.initializer[0].dims[:] = [1 << 16, 1 << 16]  # 16 GiB of float32
    path.write_bytes(proto.SerializeToString())
    assert (f"OnnxImportError {path}: initializer 'w': its external data, bytes 0 to "
            "17179869184 of 'w.bin', ends past the file's 8 bytes") in load_with_capped_memory(path)
