"""``tinynet.onnx.export`` and ``tinynet export``: every registered network and a trained digits
checkpoint written as checked ONNX that ONNX Runtime runs to tinynet's outputs (float32,
relative error <= 1e-5) at batch 1 and 8; named initializers, a dynamic batch axis, and a
one-line error naming the op and its module for what ONNX cannot say."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
import tinynet.functional as F
from tinynet import nn
from tinynet.cli import main
from tinynet.models.registry import MODELS
from tinynet.train import CHECKPOINT, load_trained_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import tinynet.onnx  # noqa: E402 - needs the onnx package checked above

TOLERANCE = 1e-5
# (registry name, width or None for the builder's own): narrow presets keep the tests fast.
NETWORKS = {
    "small": None,
    "paper": 0.125,
    "torchvision": 0.125,
    "inception_v4_small": None,
    "inception_resnet_v1_small": None,
    "inception_resnet_v2_small": None,
}


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max |theirs| (theirs checked not to be all zeros)."""
    assert np.abs(theirs).max() > 0 and np.ptp(theirs) > 0
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def randomized(model):
    """``model`` with every parameter and running statistic drawn at random, so no output is
    zero because of an initialisation (a zero-initialised last layer, say)."""
    rng = np.random.default_rng(0)
    state = model.state_dict()
    for key, value in state.items():
        if value.dtype.kind != "f":
            continue
        if key.endswith("running_var"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
        else:
            value[...] = rng.normal(0, 1 / np.sqrt(max(value[0].size, 1)), value.shape)
    model.load_state_dict(state)
    return model.eval()


def runtime_output(path, batch):
    return ort.InferenceSession(str(path)).run(None, {"input": batch})[0]


@pytest.mark.parametrize("name", NETWORKS)
def test_runtime_runs_every_network_as_tinynet_does(tmp_path, name):
    entry = MODELS[name]
    tinynet.manual_seed(0)
    options = {} if NETWORKS[name] is None else {"width": NETWORKS[name]}
    model = randomized(entry.build(**options))
    size = entry.input_size
    rng = np.random.default_rng(1)
    path = tinynet.onnx.export(model, rng.standard_normal((1, 3, size, size), np.float32),
                               tmp_path / f"{name}.onnx")  # fmt: skip
    onnx.checker.check_model(onnx.load(path), full_check=True)
    for batch in (1, 8):
        images = rng.standard_normal((batch, 3, size, size), np.float32)
        with tinynet.no_grad():
            ours = model(images).data
        assert relative_error(runtime_output(path, images), ours) <= TOLERANCE
    with tinynet.no_grad():  # and tinynet reads its own file back
        assert relative_error(tinynet.onnx.load(path)(images).data, ours) <= TOLERANCE


def test_parameters_are_named_initializers_and_the_batch_axis_is_dynamic(tmp_path):
    model = tinynet.models.googlenet_small(width=0.125)
    path = tinynet.onnx.export(model, np.zeros((2, 3, 32, 32), np.float32), tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    state = model.state_dict()
    used = {name for name, _ in model.named_parameters() if not name.startswith("aux")}
    assert used <= set(stored) <= set(state)  # the aux heads do not run in eval mode
    for name, value in stored.items():
        np.testing.assert_array_equal(value, state[name])
    assert [v.name for v in graph.input] == ["input"]
    assert [v.name for v in graph.output] == ["output"]
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3


def test_export_records_a_frozen_model_and_restores_training_mode(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3))  # fmt: skip
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.train()
    path = tinynet.onnx.export(model, np.ones((1, 1, 4, 4), np.float32), tmp_path / "f.onnx")
    assert model.training
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops == ["Conv", "Relu", "Flatten", "Gemm", "Identity"]
    images = np.random.default_rng(0).standard_normal((8, 1, 4, 4), np.float32)
    assert relative_error(runtime_output(path, images), model.eval()(images).data) <= TOLERANCE


class Transposer(nn.Module):
    def forward(self, x):
        return F.permute(x, (0, 1, 3, 2))


class FunctionalPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2)


@pytest.mark.parametrize(
    "layer, expected",
    [
        (
            Transposer(),
            r"cannot write Permute \(op op1, in module 1 \(Transposer\)\) as ONNX: tinynet's "
            r"Permute op is not exported: no model's forward permutes axes$",
        ),
        (FunctionalPool(), r"cannot write MaxPool2d \(op op1, in module 1 \(FunctionalPool\)\)"),
    ],
)
def test_an_op_onnx_cannot_say_is_one_line_naming_op_and_module(tmp_path, layer, expected):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), layer)
    with pytest.raises(tinynet.onnx.OnnxExportError, match=expected) as error:
        tinynet.onnx.export(model, np.ones((1, 1, 4, 4), np.float32), tmp_path / "x.onnx")
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_bad_arguments_are_one_line_errors(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    with pytest.raises(ValueError, match="opset must be an int from 13 to 21; got 9"):
        tinynet.onnx.export(model, np.ones((1, 1, 4, 4), np.float32), tmp_path / "x.onnx", 9)
    with pytest.raises(ValueError, match="example_input must be a float32 array"):
        tinynet.onnx.export(model, np.ones((1, 1, 4, 4)), tmp_path / "x.onnx")


# ------------------------------------------------------------------ the CLI, a trained checkpoint
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A 1-epoch run on the bundled digits at width 0.125 (a few seconds)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--epochs", "1", "--width", "0.125", "--batch-size", "16",
            "--max-batches", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out / CHECKPOINT


def test_cli_exports_a_trained_checkpoint_that_runtime_runs_alike(tmp_path, digits_run, capsys):
    out = tmp_path / "digits.onnx"
    assert main(["export", str(digits_run), str(out)]) == 0
    assert f"wrote {out} (input (N, 1, 32, 32), opset 17)" in capsys.readouterr().out
    model, config = load_trained_model(digits_run)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        images = rng.standard_normal((batch, 1, 32, 32), np.float32)
        with tinynet.no_grad():
            ours = model(images).data
        assert relative_error(runtime_output(out, images), ours) <= TOLERANCE
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert metadata["tinynet.classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    # predict reads the image as the run did (size, grey, normalisation) from that metadata
    Image = pytest.importorskip("PIL.Image")
    image = tmp_path / "digit.png"
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(out), str(image)]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", str(digits_run), str(image)]) == 0
    assert from_onnx == capsys.readouterr().out


def test_cli_export_of_a_registered_model_and_its_errors(tmp_path, capsys):
    out = tmp_path / "small.onnx"
    assert main(["export", "--model", "small", "--width", "0.125", str(out)]) == 0
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 32
    capsys.readouterr()
    assert main(["export", str(out)]) == 1
    assert capsys.readouterr().err.strip() == (
        "tinynet export: error: export takes CHECKPOINT OUT (or --model NAME OUT); got 1 "
        f"paths: ['{out}']"
    )
    assert main(["export", "--model", "small", str(tmp_path / "x.png")]) == 1
    assert "the output must end in .onnx; got" in capsys.readouterr().err


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["max", "avg", "avg-exclude-pad"]),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    data=st.data(),
    ceil_mode=st.booleans(),
    height=st.integers(4, 9),
    width=st.integers(4, 9),
)
def test_pools_mean_the_same_in_onnx_runtime(kind, kernel, stride, data, ceil_mode, height,
                                             width):  # fmt: skip
    padding = data.draw(st.integers(0, kernel // 2), label="padding")
    if kind == "max":
        pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    else:
        pool = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode,
                            count_include_pad=kind == "avg")  # fmt: skip
    model = nn.Sequential(nn.Conv2d(2, 3, 1), pool)
    images = np.random.default_rng(height).standard_normal((2, 2, height, width), np.float32)
    try:
        proto = tinynet.onnx.writer.to_onnx(model, images[:1])
    except tinynet.onnx.OnnxExportError as error:
        # ceil_mode's last window dropped along one axis only: ONNX has one ceil_mode for both
        assert height != width and ceil_mode and "ceil_mode" in str(error)
        return
    runtime = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": images})[0]
    with tinynet.no_grad():
        ours = model(images).data
    assert runtime.shape == ours.shape
    np.testing.assert_allclose(runtime, ours, rtol=1e-5, atol=1e-6)
