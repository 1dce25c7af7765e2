"""``tinynet.onnx.load`` on ONNX written by PyTorch's exporter (a GoogLeNet with BatchNorm
kept as a node, a small CNN): tinynet's outputs equal ONNX Runtime's (relative error <= 1e-5)
and its gradients PyTorch's; the imported weights train with tinynet.optim and save; `tinynet
convert` and `tinynet predict` take .onnx files; every bad file is a one-line error naming the
file and the problem, within a bounded allocation. The exporter's files with its defaults, in
both its modes (the paper GoogLeNet's LRN as shape arithmetic, external data), are tested in
test_onnx_exporters.py."""

import dataclasses
import warnings

import numpy as np
import pytest

import tinynet
import tinynet.functional as F
from tinynet.cli import main
from tinynet.models.googlenet import TORCHVISION

from bounded import run_bounded

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tinynet.onnx  # noqa: E402 - needs the onnx package checked above

TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-9  # float64


def relative_error(ours, theirs) -> float:
    theirs = np.asarray(theirs)
    assert np.abs(theirs).max() > 0
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def small_cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10), nn.LogSoftmax(dim=1),
    )  # fmt: skip


def googlenet(torch, config, width):
    from torch_googlenet import TorchGoogLeNet

    torch.manual_seed(0)
    model = TorchGoogLeNet(dataclasses.replace(config, width=width, aux_logits=False))
    with torch.no_grad():  # BatchNorm that is not the identity (PyTorch's exporter would
        for name, parameter in model.named_parameters():  # also merge equal initializers)
            if ".bn." in name:
                parameter.uniform_(0.5, 1.5)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model


def export_with_torch(torch, model, path, size):
    """``model`` (eval mode) written by PyTorch's TorchScript exporter with a dynamic batch,
    BatchNormalization kept as a node of its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            model.eval(), torch.zeros(1, 3, size, size), str(path), dynamo=False,
            input_names=["input"], output_names=["output"], opset_version=17,
            dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
            training=torch.onnx.TrainingMode.PRESERVE,  # BatchNorm stays a node of its own
        )  # fmt: skip
    return path


MODELS = {
    "small-cnn": (lambda torch: small_cnn(torch), 16),
    "torchvision-googlenet-bn": (lambda torch: googlenet(torch, TORCHVISION, 0.125), 224),
}


@pytest.mark.parametrize("name", MODELS)
def test_imported_graph_runs_as_runtime_and_differentiates_as_torch(torch, tmp_path, name):
    build, size = MODELS[name]
    theirs = build(torch).eval()
    path = export_with_torch(torch, theirs, tmp_path / f"{name}.onnx", size)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    if name == "torchvision-googlenet-bn":
        assert "BatchNormalization" in ops
    ours = tinynet.onnx.load(path)
    runtime = ort.InferenceSession(str(path))
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        images = rng.standard_normal((batch, 3, size, size), np.float32)
        with tinynet.no_grad():
            output = ours(images).data
        assert relative_error(output, runtime.run(None, {"input": images})[0]) <= TOLERANCE

    # Gradients of sum(output * weights) for the input and every weight against PyTorch's, in
    # float64: in float32 the paper's tiny input gradients differ by rounding alone (~1e-2).
    images = rng.standard_normal((2, 3, size, size))
    assert_differentiates_as_torch(torch, ours.double(), theirs.double(), images,
                                   rng.standard_normal(output.shape[1:]))  # fmt: skip


def assert_differentiates_as_torch(torch, ours, theirs, images, weights):
    """The gradients of sum(output * weights) for the input and every weight equal PyTorch's
    (both models in float64), and the weights keep PyTorch's state-dict names."""
    x = tinynet.tensor(images, requires_grad=True)
    F.sum(F.mul(ours(x), weights)).backward()
    tx = torch.tensor(images, requires_grad=True)
    (theirs(tx) * torch.from_numpy(weights)).sum().backward()
    assert relative_error(x.grad, tx.grad.numpy()) <= GRADIENT_TOLERANCE
    torch_grads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    named = dict(ours.named_parameters())
    assert set(named) == set(torch_grads)
    for key, parameter in named.items():
        assert relative_error(parameter.grad, torch_grads[key]) <= GRADIENT_TOLERANCE, key


def test_an_imported_model_fine_tunes_and_saves(torch, tmp_path):
    path = export_with_torch(torch, small_cnn(torch), tmp_path / "cnn.onnx", 16)
    model = tinynet.onnx.load(path)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16, 3, 16, 16), np.float32)
    labels = rng.integers(0, 10, 16)
    optimizer = tinynet.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.data))
    assert losses[-1] < losses[0]
    tinynet.save(model.state_dict(), tmp_path / "tuned.npz")
    fresh = tinynet.onnx.load(path)
    fresh.load_state_dict(tinynet.load(tmp_path / "tuned.npz"))
    with tinynet.no_grad():
        np.testing.assert_array_equal(fresh(images).data, model(images).data)


def test_cli_convert_and_predict_take_onnx_files(torch, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    path = export_with_torch(torch, small_cnn(torch), tmp_path / "cnn.onnx", 16)
    assert main(["convert", str(path), str(tmp_path / "w.npz")]) == 0
    state = tinynet.load(tmp_path / "w.npz")
    expected = tinynet.onnx.load(path).state_dict()
    assert list(state) == list(expected) == ["0.weight", "0.bias", "3.weight", "3.bias",
                                             "7.weight", "7.bias"]  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "im.png")
    capsys.readouterr()
    assert main(["predict", str(path), str(tmp_path / "im.png"), "--top", "2"]) == 0
    with tinynet.no_grad():
        logits = tinynet.onnx.load(path)(image.transpose(2, 0, 1)[None] / np.float32(255)).data
    best = np.argsort(-logits[0])[:2]
    shown = capsys.readouterr().out
    assert shown.startswith(f"{tmp_path / 'im.png'}: {best[0]} ") and f", {best[1]} " in shown


def test_initializer_names_become_state_dict_keys_a_module_can_hold(tmp_path):
    names = ["weights", "source", "_parameters", "a/b:c.weight"]
    nodes = [helper.make_node("Add", ["x" if k == 0 else f"s{k}", name], [f"s{k + 1}"])
             for k, name in enumerate(names)]  # fmt: skip
    nodes[-1].output[0] = "y"
    values = [np.full(2, k + 1, np.float32) for k in range(len(names))]
    proto = tiny_model(nodes, [numpy_helper.from_array(v, n) for v, n in zip(values, names)])
    path = tmp_path / "names.onnx"
    path.write_bytes(proto.SerializeToString())
    model = tinynet.onnx.load(path)
    assert list(model.state_dict()) == ["weights", "source_", "_parameters_", "a_b_c.weight"]
    assert model.source == str(path)
    np.testing.assert_array_equal(model(np.zeros((1, 2), np.float32)).data, [[10, 10]])


# ------------------------------------------------------------------ bad files
def tiny_model(nodes=None, initializers=(), opset=17, input_name="x"):
    """A one-node Relu model (or ``nodes``) as an onnx ModelProto."""
    nodes = nodes or [helper.make_node("Relu", [input_name], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        list(initializers),
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def external_weight():
    tensor = numpy_helper.from_array(np.ones(2, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="weights.bin")
    return tensor


BAD = {
    "unsupported op": (
        tiny_model([helper.make_node("Tanh", ["x"], ["y"], name="squash")]),
        "node 'squash' (Tanh): op Tanh is not supported",
    ),
    "unsupported opset": (tiny_model(opset=9), "opset 9 is not supported"),
    "double data": (
        tiny_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                   [numpy_helper.from_array(np.ones(2), "w")]),  # fmt: skip
        "initializer 'w' has data type DOUBLE; tinynet reads FLOAT and INT64 tensors",
    ),
    "missing external data": (
        tiny_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [external_weight()]),
        "initializer 'w': cannot open its external data file 'weights.bin' (No such file",
    ),
    "ceil_mode window in the padding": (
        tiny_model([helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[1, 1],
                                     strides=[2, 2], ceil_mode=1)]),  # fmt: skip
        "node 'pool' (MaxPool): ceil_mode's last window along an axis of 4 starts in the padding",
    ),
    "grouped conv": (
        tiny_model([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=2)],
                   [numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")]),
        "node 'dw' (Conv): group must be 1; got 2",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_graphs_are_one_line_errors_naming_the_file(tmp_path, case):
    proto, expected = BAD[case]
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(tinynet.onnx.OnnxImportError) as error:
        model = tinynet.onnx.load(path)
        model(np.ones((1, 2, 4, 4), np.float32))  # attribute problems show when a node runs
    message = str(error.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_a_malformed_protobuf_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + bytes(range(256)))
    assert main(["predict", str(path), str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tinynet predict: error: {path} is not a valid ONNX")
    assert "\n" not in err


def test_a_tensor_larger_than_its_bytes_is_refused_before_allocation(tmp_path):
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 16, 1 << 16],
                       raw_data=b"\0\0\0\0")  # fmt: skip
    proto = tiny_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [huge])
    path = tmp_path / "huge.onnx"
    path.write_bytes(proto.SerializeToString())
    shown = load_with_capped_memory(path)
    assert "OnnxImportError" in shown
    assert "declares shape [65536, 65536] (4294967296 values) but holds 1" in shown


def load_with_capped_memory(path, input_shape=None) -> str:
    """What ``tinynet.onnx.load(path)``, then a call of the model on ones of ``input_shape`` if
    given, raises in a process whose memory is capped (tests/bounded.py): the exception's type
    and message. It must not run out of memory."""
    call = "" if input_shape is None else f"(np.ones({tuple(input_shape)}, np.float32))"
    result = run_bounded(
        f"""
        try:
            tinynet.onnx.load({str(path)!r}){call}
        except Exception as error:
            print(type(error).__name__, error)
        """,
        imports="import numpy as np\nimport tinynet.onnx",
    )
    assert "MemoryError" not in result.stdout + result.stderr, result.stderr
    return result.stdout
