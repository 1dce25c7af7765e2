"""Hostile and malformed ONNX files (issue 23): each is refused in one line that names the file,
and the node for a node's problem, by ``tinynet.onnx`` and by ``tinynet predict`` (exit 1, nothing
written), in a process whose memory is capped; a valid model imports in memory within 2.5 times
its file's size."""

import json

import numpy as np
import pytest

from tinynet.cli import EXIT_ERROR

from bounded import run_bounded
from datafiles import needs_pillow, snapshot

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tinynet.onnx  # noqa: E402 - needs the onnx package checked above
from tinynet.onnx import checks  # noqa: E402

BIG = 2**40
CLASSES = 10


# ------------------------------------------------------------------ building the files
def node(op_type, inputs, outputs=("y",), name=None, **attributes):
    return helper.make_node(op_type, list(inputs), list(outputs), name=name, **attributes)


def tensor(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype), name)


WEIGHTS = [tensor("fc.weight", np.full((CLASSES, 192), 0.01))]
CLASSIFIER = [
    node("Flatten", ["h"], ["flat"], name="flatten"),
    node("Gemm", ["flat", "fc.weight"], ["y"], name="fc", transB=1),
]


def model(
    nodes, initializers=(), input_shape=(1, 3, 8, 8), output_shape=(1, CLASSES), metadata=None
) -> bytes:
    """A model of ``nodes`` from the image 'x' to the scores 'y', as the bytes of its file."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        list(initializers),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def classifier(*nodes, initializers=(), **options) -> bytes:
    """``nodes`` from 'x' to 'h' (1, 3, 8, 8), then a flatten and a linear layer to 10 scores."""
    return model([*nodes, *CLASSIFIER], [*initializers, *WEIGHTS], **options)


def many(count: int, item) -> list:
    return [item] * count


def deep_names(count: int, depth: int) -> list:
    """``count`` empty initializers whose names nest ``depth`` parts deep, no two alike."""
    return [tensor(".".join([f"i{k}", *"p" * (depth - 1)]), np.zeros(0)) for k in range(count)]


def two_node_cycle() -> bytes:
    return classifier(
        node("Add", ["x", "q"], ["p"], name="add"),
        node("Relu", ["p"], ["q"], name="relu"),
        node("Relu", ["q"], ["h"]),
    )


def doubling(times: int) -> list:
    """Concats that double the image ``times`` times: 96 bytes a node, 2**times the memory."""
    names = ["x", *(f"c{k}" for k in range(times))]
    return [
        node("Concat", [a, a], [b], name=f"concat{k}", axis=1)
        for k, (a, b) in enumerate(zip(names, names[1:]))
    ]


# (file bytes, the line's text after "tinynet predict: error: FILE"). Cases marked "predict" are
# refused by what predict needs; "memory" run only under the cap.
CASES = {
    "empty file": (b"", " is empty, not an ONNX model"),
    "no graph": (
        onnx.ModelProto(ir_version=8).SerializeToString(),
        ": not an ONNX model: it holds no graph",
    ),
    "a billion classes": (
        model([node("Relu", ["x"], ["y"])], output_shape=("N", 10**9)),
        ": the graph's output 'y' declares shape (None, 1000000000) (1,000,000,000 values); "
        "tinynet reads at most 268,435,456 values (64 channels of 2048x2048 pixels)",
    ),
    "a 30000x30000 input": (
        classifier(node("Relu", ["x"], ["h"]), input_shape=(1, 3, 30000, 30000)),
        ": the graph's input 'x' declares shape (1, 3, 30000, 30000) (2,700,000,000 values); "
        "tinynet reads at most 268,435,456 values",
    ),
    "an input dimension of 2^40": (
        classifier(node("Relu", ["x"], ["h"]), input_shape=(1, 3, BIG, 8)),
        ": value 'x' declares a dimension of 1,099,511,627,776; a dimension must be in "
        "[0, 2,147,483,647]",
    ),
    "an initializer dimension of 2^40": (
        classifier(
            node("Relu", ["x"], ["h"]),
            initializers=[TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[BIG, 0])],
        ),
        ": initializer #0 ('w') declares a dimension of 1,099,511,627,776",
    ),
    "a reshape to 2^40": (
        classifier(
            node("Reshape", ["x", "shape"], ["h"], name="view"),
            initializers=[tensor("shape", [1, BIG], np.int64)],
        ),
        ": node 'view' (Reshape): ",
    ),
    "a name of a million dots": (
        classifier(node("Relu", ["x"], ["h"]), initializers=[tensor("." * 10**6, [1.0])]),
        ": initializer #0 has a name of 1,000,000 characters ('......",
    ),
    "a name 40 modules deep": (
        classifier(node("Relu", ["x"], ["h"]), initializers=deep_names(1, 40)),
        ": initializer 'i0.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p.p."
        "p.p.p.p' has 40 dot-separated parts; tinynet nests modules at most 32 deep",
    ),
    "names making 120,000 modules": (
        classifier(node("Relu", ["x"], ["h"]), initializers=deep_names(4000, 31)),
        ": the initializers' names make more than 100,000 modules; tinynet makes at most 100,000",
    ),
    "100,001 nodes": (
        classifier(*many(checks.MAX_NODES + 1, node("Relu", ["x"], ["h"]))),
        ": more than 100,000 nodes; tinynet reads at most 100,000",
    ),
    "100,001 initializers": (
        classifier(
            node("Relu", ["x"], ["h"]),
            initializers=many(checks.MAX_INITIALIZERS, tensor("w", np.zeros(0))),
        ),
        ": more than 100,000 initializers; tinynet reads at most 100,000",
    ),
    "a max pool of stride 0 with ceil_mode": (
        classifier(
            node(
                "MaxPool",
                ["x"],
                ["h"],
                name="pool",
                kernel_shape=[2, 2],
                strides=[0, 0],
                ceil_mode=1,
            )
        ),
        ": node 'pool' (MaxPool): strides must be two ints >= 1; got [0, 0]",
    ),
    "a reshape's 0 past the rank": (
        classifier(
            node("Reshape", ["x", "shape"], ["h"], name="view"),
            initializers=[tensor("shape", [0, 0, 0, 0, 0], np.int64)],
        ),
        ": node 'view' (Reshape): ",
    ),
    "a Constant of the wrong type": (
        classifier(
            node("Constant", [], ["c"], name="three", value=3),
            node("Add", ["x", "c"], ["h"], name="add"),
        ),
        ": node 'three' (Constant): only a Constant with a tensor 'value' is supported",
    ),
    "a node without output": (
        classifier(node("Relu", ["x"], [], name="lost"), node("Relu", ["x"], ["h"])),
        ": node 'lost' (Relu) makes no output",
    ),
    "a nameless node without output": (
        classifier(node("Relu", ["x"], ["h"]), node("Relu", ["x"], [])),
        ": node #1 (Relu) makes no output",
    ),
    "a softmax on axis 5": (
        classifier(node("Softmax", ["x"], ["h"], name="softmax", axis=5)),
        ": node 'softmax' (Softmax): softmax: dim=5 is out of range for a tensor with 4 dimensions",
    ),
    "an input no node makes": (
        classifier(node("Add", ["x", "ghost"], ["h"], name="add")),
        ": node 'add' (Add) reads ['ghost'], which no earlier node or initializer makes",
    ),
    "a conv weight that is not in the file": (
        classifier(node("Conv", ["x", "conv.weight"], ["h"], name="conv", pads=[1, 1, 1, 1])),
        ": node 'conv' (Conv) reads ['conv.weight'], which no earlier node or initializer makes",
    ),
    "a cycle": (two_node_cycle(), ": node 'add' (Add) reads ['q'], which no earlier node"),
    "negative pads": (
        classifier(
            node("Conv", ["x", "w"], ["h"], name="conv", pads=[-1, -1, 1, 1]),
            initializers=[tensor("w", np.ones((3, 3, 3, 3)))],
        ),
        ": node 'conv' (Conv): pads must be four ints from 0 to the kernel's size [3, 3]; got "
        "[-1, -1, 1, 1]",
    ),
    "pads of 2^40": (
        classifier(node("MaxPool", ["x"], ["h"], name="pool", kernel_shape=[1, 1], pads=[BIG] * 4)),
        ": node 'pool' (MaxPool): pads must be four ints from 0 to the kernel's size [1, 1]",
    ),
    "a kernel larger than the padded input": (
        classifier(node("MaxPool", ["x"], ["h"], name="pool", kernel_shape=[9, 9])),
        ": node 'pool' (MaxPool): ",
    ),
    "a conv kernel larger than the padded input": (
        classifier(
            node("Conv", ["x", "w"], ["h"], name="conv"),
            initializers=[tensor("w", np.ones((3, 3, 9, 9)))],
        ),
        ": node 'conv' (Conv): ",
    ),
    "an attribute of the wrong type": (
        classifier(node("MaxPool", ["x"], ["h"], name="pool", kernel_shape=2.0)),
        ": not a valid ONNX model: node 'pool' (MaxPool): Mismatched attribute type in "
        "'pool : kernel_shape'. Expected: 'INTS', actual: 'FLOAT'",
    ),
    "an unknown attribute on a nameless node": (
        classifier(node("MaxPool", ["x"], ["h"], kernel_shape=[1, 1], speed=11)),
        ": not a valid ONNX model: node #0 (MaxPool): Unrecognized attribute: speed for "
        "operator MaxPool",
    ),
    "two inputs to a Relu": (
        classifier(node("Relu", ["x", "x"], ["h"], name="relu")),
        ": not a valid ONNX model: node 'relu' (Relu): Node(relu) with schema(::Relu:14) has input "
        "size 2 not in range [min=1, max=1].",
    ),
    "two nodes making one output": (
        classifier(
            node("Relu", ["x"], ["h"], name="first"), node("Relu", ["x"], ["h"], name="second")
        ),
        ": node 'second' (Relu) makes 'h', which node 'first' (Relu) already makes",
    ),
    "a node overwriting the input": (
        classifier(node("Relu", ["x"], ["x"], name="relu"), node("Relu", ["x"], ["h"])),
        ": node 'relu' (Relu) makes 'x', which a graph input already makes",
    ),
    "a flatten past the rank": (
        model([node("Flatten", ["x"], ["flat"], name="flatten", axis=7), CLASSIFIER[1]], WEIGHTS),
        ": node 'flatten' (Flatten): axis must be in [-4, 4]; got 7",
    ),
    "a concat past the rank": (
        classifier(node("Concat", ["x", "x"], ["h"], name="concat", axis=4)),
        ": node 'concat' (Concat): ",
    ),
    "a linear layer of the wrong size": (
        model(
            [
                node("Flatten", ["x"], ["flat"]),
                node("Gemm", ["flat", "w"], ["y"], name="fc", transB=1),
            ],
            [tensor("w", np.ones((CLASSES, 100)))],
        ),
        ": node 'fc' (Gemm): ",
    ),
    # What predict needs of a model that imports:
    "a 4096x4096 image": (
        classifier(node("Relu", ["x"], ["h"]), input_shape=(1, 3, 4096, 4096)),
        ": predict cannot read images for this model: input_size must be an int in [1, 2048]; "
        "got 4096",
    ),
    "200,000 classes": (
        model([node("Relu", ["x"], ["y"])], output_shape=("N", 200_000)),
        ": the graph's output 'y' has shape (None, 200000): 200,000 classes; predict reads at "
        "most 100,000",
    ),
    "class names that are not JSON": (
        classifier(node("Relu", ["x"], ["h"]), metadata={"tinynet.classes": "[cat, dog"}),
        ": its metadata 'tinynet.classes' is not valid JSON (Expecting value: line 1 column 2 "
        "(char 1))",
    ),
    "class names nested a million deep": (
        classifier(node("Relu", ["x"], ["h"]), metadata={"tinynet.classes": "[" * 10**6}),
        ": its metadata 'tinynet.classes' is not valid JSON",
    ),
    "three class names for ten scores": (
        classifier(
            node("Relu", ["x"], ["h"]),
            metadata={"tinynet.classes": json.dumps(["cat", "dog", "eel"])},
        ),
        ": its metadata names 3 classes; the graph's output 'y' has shape (1, 10)",
    ),
    "a declared output that lies": (
        model([node("Flatten", ["x"], ["y"], name="flatten")]),
        ": the model gives scores of shape (1, 192) for 1 images of 10 classes",
    ),
    "a NaN weight": (
        model(CLASSIFIER[1:], [tensor("fc.weight", np.full((CLASSES, 192), np.nan))]),
        ": initializer 'fc.weight' holds NaN values",
    ),
    "infinite scores": (
        model(
            [
                node("Flatten", ["x"], ["flat"]),
                node("Gemm", ["flat", "fc.weight"], ["scores"], transB=1),
                node("Div", ["scores", "zero"], ["y"], name="divide"),
            ],
            [*WEIGHTS, tensor("zero", [0.0])],
        ),
        ": the model gives NaN or infinite scores for ",
    ),
}
# Refused by predict once the model has run, not by the import.
NOT_IMPORT_ERRORS = {"a declared output that lies", "infinite scores"}
# 40 Concats of 96 bytes each that double the image each time: memory runs out in a node.
OUT_OF_MEMORY = "activations that double 40 times"
CASES[OUT_OF_MEMORY] = (
    classifier(*doubling(39), node("Concat", ["c38", "c38"], ["h"], axis=1)),
    "",
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each case's file and an 8x8 image, in a folder of their own."""
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path_factory.mktemp("hostile-onnx")
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(folder / "image.png")
    (folder / "good.onnx").write_bytes(classifier(node("Relu", ["x"], ["h"])))
    paths = {}
    for k, (case, (data, _)) in enumerate(CASES.items()):
        paths[case] = folder / f"case{k}.onnx"
        paths[case].write_bytes(data)
    return folder, paths


@pytest.fixture(scope="module")
def refusals(files):
    """case -> (exit code, stderr) of `tinynet predict FILE image.png`, every case run in one
    process allowed 200 MB above its imports (a valid model's predict warms the kernels up),
    and whether the folder was left as it was."""
    folder, paths = files
    image, good = str(folder / "image.png"), str(folder / "good.onnx")
    before = snapshot(folder)
    result = run_bounded(
        f"""
        results = {{}}
        for case, path in {[(case, str(path)) for case, path in paths.items()]!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["predict", path, {image!r}])
            results[case] = (code, err.getvalue())
        print(json.dumps(results))
        """,
        imports=f"""
        import contextlib, io, json
        from tinynet.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["predict", {good!r}, {image!r}]) == 0
        """,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), before == snapshot(folder)


@needs_pillow
@pytest.mark.parametrize("case", CASES)
def test_predict_refuses_in_one_line_in_bounded_memory_writing_nothing(files, refusals, case):
    _, paths = files
    results, unchanged = refusals
    code, err = results[case]
    lines = err.strip().splitlines()
    assert code == EXIT_ERROR and len(lines) == 1 and "Traceback" not in err, err
    if case == OUT_OF_MEMORY:
        assert lines[0].startswith(
            f"tinynet predict: error: out of memory: {paths[case]}: node 'concat"
        ), err
        assert "(Concat): Unable to allocate" in lines[0], err
    else:
        assert lines[0].startswith(f"tinynet predict: error: {paths[case]}{CASES[case][1]}"), err
    assert unchanged


@pytest.mark.parametrize("case", sorted(set(CASES) - NOT_IMPORT_ERRORS - {OUT_OF_MEMORY}))
def test_the_python_api_raises_an_import_error_naming_the_file(tmp_path, case):
    path = tmp_path / "model.onnx"
    path.write_bytes(CASES[case][0])
    with pytest.raises(tinynet.onnx.OnnxImportError) as error:
        model, _ = tinynet.onnx.load_for_prediction(path)
        model(np.zeros((1, 3, 8, 8), np.float32))  # a node's attributes show when it runs
    assert str(error.value).startswith(f"{path}{CASES[case][1]}")
    assert "\n" not in str(error.value)


def gemm_chain(megabytes: int) -> bytes:
    """A valid model of 1024 x 1024 linear layers holding about ``megabytes`` of weights."""
    rng, count = np.random.default_rng(0), max(1, megabytes // 4)
    names = ["x", *(f"h{k}" for k in range(count - 1)), "y"]
    nodes = [
        node("Gemm", [a, f"layers.{k}.weight", f"layers.{k}.bias"], [b], transB=1)
        for k, (a, b) in enumerate(zip(names, names[1:]))
    ]
    weights = [
        tensor(f"layers.{k}.{kind}", rng.standard_normal(shape, np.float32))
        for k in range(count)
        for kind, shape in (("weight", (1024, 1024)), ("bias", (1024,)))
    ]
    return model(nodes, weights, input_shape=("N", 1024), output_shape=("N", 1024))


def test_a_valid_model_imports_in_memory_within_two_and_a_half_times_its_size(tmp_path):
    path = tmp_path / "layers.onnx"
    path.write_bytes(gemm_chain(40))
    size = path.stat().st_size
    result = run_bounded(
        f"""
        model = tinynet.onnx.load({str(path)!r})
        x = np.ones((2, 1024), np.float32)
        print(len(model.state_dict()), float(model(x).data.sum()))
        """,
        budget_mb=int(2.5 * size / 2**20),
        imports="import numpy as np\nimport tinynet.onnx",
    )
    assert "MemoryError" not in result.stderr and result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "20"
