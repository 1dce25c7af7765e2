"""``tinynet explore``'s data and its command: the values and gradients are the real ones, each
op's backward rule written out with one element's numbers equals what its Function.backward
gave, the contributions to a value that feeds several ops sum to its gradient, the HTML holds
everything it needs, and every bad argument is one line naming it."""

from __future__ import annotations

import contextlib
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
from tinynet import functional as F
from tinynet import nn
from tinynet.cli import main
from tinynet.explore import PageView, network_page, page_data, render_html, write_page
from tinynet.explore.network import first_test_image, fixed_sample, network_from
from tinynet.explore.rules import RULES
from tinynet.testing.strategies import (
    batch_norm_cases,
    classification_cases,
    conv_cases,
    linear_cases,
    lrn_cases,
    pool_cases,
)
from tinynet.train import TrainConfig

from strategies import distinct, seeds, uniform

# Each network at a small image size, so that the three pages build in seconds.
NETWORKS = {"small": 32, "paper": 64, "inception_v3_small": 32}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network_data(request):
    model, settings = network_from(model=request.param)
    image = fixed_sample(settings["channels"], NETWORKS[request.param])
    return model, network_page(model, image, title=request.param)


def embedded_data(text: str) -> dict:
    """The JSON a page holds in window.TINYNET_DATA."""
    start = text.index("window.TINYNET_DATA = ") + len("window.TINYNET_DATA = ")
    return json.loads(text[start : text.index(";\n</script>", start)].replace("<\\/", "</"))


def scalar_graph():
    """Lesson 1: L = relu(a·b + c)² · d at a, b, c, d = 2, -1.5, 4, 0.5."""
    a, b, c, d = (tinynet.tensor(v, dtype=np.float64, requires_grad=True)
                  for v in (2.0, -1.5, 4.0, 0.5))  # fmt: skip
    return F.relu(a * b + c) ** 2 * d, {"a": a, "b": b, "c": c, "d": d}


def test_the_scalar_graph_has_every_value_and_gradient_of_lesson_1():
    loss, names = scalar_graph()
    data = page_data(loss, names=names)
    values = [op["value"]["scalar"] for op in data["ops"]]
    grads = [op["grad"]["scalar"] for op in data["ops"]]
    assert [op["op"] for op in data["ops"]] == ["Mul", "Add", "ReLU", "Pow", "Mul"]
    assert values == [-3.0, 1.0, 1.0, 1.0, 0.5]  # e, f, g, h, L of the lesson
    assert grads == [1.0, 1.0, 1.0, 0.5, 1.0]
    leaves = {leaf["name"]: leaf["grad"]["scalar"] for leaf in data["leaves"] if "grad" in leaf}
    assert leaves == {"a": -1.5, "b": 2.0, "c": 1.0, "d": 1.0}
    # backward order: the loss first, each op once, then the four inputs
    order = [step["node"] for step in data["backward"]]
    assert order[:5] == [op["id"] for op in reversed(data["ops"])]
    assert sorted(data["leaves"][int(key[4:])]["name"] for key in order[5:]) == list("abcd")
    relu = next(step for step in data["backward"] if step["node"] == data["ops"][2]["id"])
    assert relu["rule"]["lines"][:2] == ["grad_in = grad_out · [x > 0]", "= 1 · [1 > 0]"]


def test_each_op_s_rule_gives_what_its_backward_gave(network_data):
    model, data = network_data
    ops = {op["id"]: op for op in data["ops"]}
    kinds = set()
    for step in data["backward"]:
        if step["node"] not in ops:
            continue
        rule = step["rule"]
        kinds.add(ops[step["node"]]["op"])
        assert "value" in rule, f"{ops[step['node']]['op']} has no rule written out"
        assert rule["value"] == pytest.approx(rule["backward"], rel=1e-4, abs=1e-7), rule["lines"]
        assert rule["lines"][-1].startswith("= ")
    assert kinds <= set(RULES)
    assert {"Conv2d", "ReLU", "MaxPool2d", "Concat", "Linear", "CrossEntropy"} <= kinds


def test_a_value_feeding_several_ops_receives_the_sum_of_their_contributions(network_data):
    model, data = network_data
    grads = {node["id"]: node["grad"] for node in (*data["ops"], *data["leaves"])
             if node.get("grad")}  # fmt: skip
    sums = [send for step in data["backward"] for send in step["sends"] if send["of"] > 1]
    assert any(send["of"] == 4 for send in sums)  # an Inception block's input: four branches
    for send in sums:
        if send["arrived"] == send["of"]:
            assert send["sum_norm"] == pytest.approx(grads[send["to"]]["norm"], rel=1e-4)
    assert data["backward"][-1]["node"] == next(
        leaf["id"] for leaf in data["leaves"] if leaf["name"] == "image"
    )


def test_the_page_holds_the_network_s_tree_and_every_op(network_data):
    model, data = network_data
    blocks = [name for name, kind in ((m["name"], m["type"]) for m in data["modules"])
              if "." not in name and kind.startswith("Inception")]  # fmt: skip
    assert blocks, "no Inception block in the module tree"
    conv = next(op for op in data["ops"] if op["op"] == "Conv2d")
    assert len(conv["value"]["histogram"]["counts"]) == 24
    maps = conv["value"]["maps"]
    assert len(maps["channels"]) == min(8, conv["shape"][1])
    assert maps["height"] <= 32 and maps["width"] <= 32
    assert conv["grad"]["maps"]["signed"] and not maps["signed"]


ELEMENTWISE = {
    "softmax": lambda x, w: F.softmax(x, 1),
    "log_softmax": lambda x, w: F.log_softmax(x, 0),
    "sub": lambda x, w: x - w,
    "div": lambda x, w: x / w,
    "div by a broadcast sum": lambda x, w: x / w.sum(1, keepdim=True),
    "exp and neg": lambda x, w: (-x).exp(),
    "log": lambda x, w: w.log(),
    "mean": lambda x, w: (x * w).mean(0),
}


@pytest.mark.parametrize("make", ELEMENTWISE.values(), ids=ELEMENTWISE.keys())
def test_the_rules_of_the_elementwise_ops_give_what_their_backward_gave(make):
    rng = np.random.default_rng(0)
    x = tinynet.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    w = tinynet.tensor(rng.uniform(1, 2, (3, 5)), requires_grad=True)
    weights = tinynet.tensor(rng.standard_normal(make(x, w).shape))  # so that no grad is 1
    data = page_data((make(x, w) * weights).sum())
    for step in data["backward"]:
        if "rule" in step:
            rule = step["rule"]
            assert rule["value"] == pytest.approx(rule["backward"], rel=1e-9), rule["lines"]


def rules_hold(loss):
    """Every rule of ``loss``'s page gives the number its op's backward gave."""
    steps = [step for step in page_data(loss)["backward"] if "rule" in step]
    assert steps
    for step in steps:
        rule = step["rule"]
        assert rule["value"] == pytest.approx(rule["backward"], rel=1e-9, abs=1e-12), rule["lines"]


@given(conv=conv_cases(), seed=seeds, wants=st.sampled_from(["x", "weight", "bias"]))
def test_the_conv_rule_holds_for_any_stride_padding_and_kernel(conv, seed, wants):
    x, weight, bias = conv.arrays(seed)
    if bias is None and wants == "bias":
        wants = "weight"
    values = {"x": x, "weight": weight, "bias": bias}
    inputs = {name: tinynet.tensor(v, requires_grad=name == wants)
              for name, v in values.items() if v is not None}  # fmt: skip
    y = F.conv2d(inputs["x"], inputs["weight"], inputs.get("bias"), conv.stride, conv.padding)
    rules_hold((y * tinynet.tensor(uniform(seed + 3, y.shape))).sum())


@given(pool=pool_cases(), seed=seeds)
def test_the_pool_rules_hold_for_any_window(pool, seed):
    x = tinynet.tensor(distinct(seed, pool.shape), requires_grad=True)  # no tied maxima
    y = getattr(F, pool.op)(x, **pool.kwargs)
    rules_hold((y * tinynet.tensor(uniform(seed + 1, y.shape))).sum())


@given(lrn=lrn_cases(), seed=seeds)
def test_the_lrn_rule_holds_for_any_window(lrn, seed):
    x = tinynet.tensor(uniform(seed, lrn.shape), requires_grad=True)
    y = F.local_response_norm(x, lrn.size, lrn.alpha, lrn.beta, lrn.k)
    rules_hold((y * tinynet.tensor(uniform(seed + 1, y.shape))).sum())


@given(case=batch_norm_cases(), seed=seeds, wants=st.sampled_from(["x", "weight", "bias"]))
def test_the_batchnorm_rule_holds_in_training_and_in_evaluation(case, seed, wants):
    channels = (case.shape[1],)
    wants = wants if case.affine else "x"
    x = tinynet.tensor(uniform(seed, case.shape), requires_grad=wants == "x")
    affine = [tinynet.tensor(uniform(seed + k, channels), requires_grad=wants == name)
              for k, name in ((1, "weight"), (2, "bias"))]  # fmt: skip
    weight, bias = affine if case.affine else (None, None)
    mean, var = uniform(seed + 3, channels), uniform(seed + 4, channels, 0.5, 2.0)
    running = (mean, var) if case.running else (None, None)
    y = F.batch_norm(x, *running, weight, bias, case.training, case.momentum, case.eps)
    rules_hold((y * tinynet.tensor(uniform(seed + 5, y.shape))).sum())


@given(case=linear_cases(), seed=seeds, wants=st.sampled_from(["x", "weight", "bias"]))
def test_the_linear_rule_holds_for_any_shape(case, seed, wants):
    x, weight, bias = case.arrays(seed)
    wants = "weight" if wants == "bias" and bias is None else wants
    values = {"x": x, "weight": weight, "bias": bias}
    inputs = {name: None if v is None else tinynet.tensor(v, requires_grad=name == wants)
              for name, v in values.items()}  # fmt: skip
    y = F.linear(inputs["x"], inputs["weight"], inputs["bias"])
    rules_hold((y * tinynet.tensor(uniform(seed + 3, y.shape))).sum())


@given(case=classification_cases(), seed=seeds, reduction=st.sampled_from(["mean", "sum"]))
def test_the_cross_entropy_rule_holds_with_any_smoothing(case, seed, reduction):
    logits = tinynet.tensor(case.logits(seed), requires_grad=True)
    loss = F.cross_entropy(logits, case.target(seed + 1), reduction, case.label_smoothing)
    rules_hold(loss * 3.0)


def test_values_that_differ_only_by_rounding_make_one_histogram_bar():
    x = tinynet.tensor(np.array([1.0, np.nextafter(1.0, 2.0), 1.0]), requires_grad=True)
    data = page_data((x * 2.0).sum())
    counts = data["leaves"][0]["value"]["histogram"]["counts"]
    assert sum(counts) == 3 and max(counts) == 3


def test_batchnorm_in_training_mode_is_explained_and_its_statistics_left_alone():
    tinynet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    x = tinynet.tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 5)), dtype=np.float32)
    loss = (model(x) * tinynet.tensor(np.linspace(-1, 1, 150).reshape(2, 3, 5, 5))).sum()
    running = model[1].running_mean.copy()
    data = page_data(loss, model)
    assert np.array_equal(model[1].running_mean, running)  # the replay updated copies only
    step = next(s for s in data["backward"] if s.get("rule", {}).get("lines", [""])[0].startswith(
        "grad_x = (γ/σ)"))  # fmt: skip
    assert step["rule"]["value"] == pytest.approx(step["rule"]["backward"], rel=1e-4, abs=1e-7)


def test_a_forward_that_does_not_replay_is_refused():
    tinynet.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))  # training mode: a mask per call
    loss = model(tinynet.tensor(np.ones((8, 4), np.float32), requires_grad=True)).sum()
    with pytest.raises(ValueError, match="eval mode"):
        page_data(loss, model)


def test_page_data_refuses_what_it_cannot_show():
    with pytest.raises(ValueError, match="one-element Tensor"):
        page_data(tinynet.tensor(np.ones(3), requires_grad=True) * 2)
    loss, _ = scalar_graph()
    with pytest.raises(ValueError, match="channels must be a positive int; got 0"):
        page_data(loss, channels=0)


def test_the_html_is_self_contained_and_keeps_its_scripts_closed():
    loss, names = scalar_graph()
    data = page_data(loss, names=names, title="a </script><b>title</b>")
    text = render_html(data, scripts=("window.LIVE = 1;",))
    assert not re.search(r"""(src|href)\s*=|https?://|@import""", text.replace(
        "http://www.w3.org/2000/svg", ""))  # the SVG namespace is a name, not a fetch
    assert text.count("</script>") == 3  # data, explorer, the extra script: no early close
    assert '<section id="live"></section>' in text
    assert text.index("window.TINYNET_DATA") < text.index("tinynetExplorer") < text.index("LIVE")
    assert embedded_data(text)["title"] == data["title"]
    assert "<title>a &lt;/script&gt;&lt;b&gt;title&lt;/b&gt;</title>" in text


def test_the_command_writes_the_page_of_a_registered_network(tmp_path, capsys):
    out = tmp_path / "small.html"
    assert main(["explore", "--model", "small", "--label", "3", "--out", str(out)]) == 0
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d\.\d MB\)\n", capsys.readouterr().out)
    text = out.read_text("utf-8")
    data = embedded_data(text)
    assert data["info"]["label (backward from)"] == "3"
    assert data["info"]["image"] == "a fixed sample (seeded noise), 3 x 32 x 32"
    assert data["info"]["mode"] == "eval (BatchNorm on its running statistics, no dropout)"


def test_the_command_explores_a_checkpoint_on_an_image(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits run needs scikit-learn (the train extra)")
    image_module = pytest.importorskip("PIL.Image", reason="reading --image needs Pillow")
    run = tmp_path / "run"
    assert main(["train", "--width", "0.125", "--epochs", "1", "--max-batches", "1",
                 "--no-ema", "--out", str(run)]) == 0  # fmt: skip
    image = tmp_path / "seven.png"
    image_module.fromarray(np.eye(8, dtype=np.uint8)[::-1] * 255).save(image)
    out = tmp_path / "page.html"
    capsys.readouterr()
    assert main(["explore", str(run / "checkpoint.npz"), "--image", str(image), "--label", "7",
                 "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text("utf-8")
    data = embedded_data(text)
    assert data["info"]["label (backward from)"] == "7 (7)"
    assert data["info"]["image"].startswith("seven.png, 1 x ")
    assert main(["explore", str(run / "checkpoint.npz"), "--out", str(out)]) == 0
    data = embedded_data(out.read_text("utf-8"))  # without --image: the run's first test image
    assert re.fullmatch(r"test image 0 of digits \(class \d\), 1 x 32 x 32", data["info"]["image"])


def test_a_checkpoint_whose_test_split_is_not_at_hand_says_why(tmp_path):
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path))  # no files there
    image, why = first_test_image(config, 28)
    assert image is None and why.startswith("mnist: train-images-idx3-ubyte.gz is not in")
    assert list(tmp_path.iterdir()) == []  # nothing downloaded


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "small", "--label", "10"], "label must be a class index in [0, 10); got 10"),
        (["--model", "small", "--label", "-1"], "--label: must be a class index"),
        (["--model", "small", "--out", "{tmp}/page.png"], "--out must end in .html"),
        (["--model", "small", "--image", "{tmp}/none.png"], "--image {tmp}/none.png: no such"),
        ([], "explore takes a CHECKPOINT or --model NAME"),
        (["{tmp}/checkpoint.npz", "--model", "small"], "explore takes a CHECKPOINT or --model"),
        (["{tmp}/checkpoint.npz"], "checkpoint.npz"),
        (["--model", "small", "--out", "{tmp}/file.txt/page.html"], "--out"),
    ],
)
def test_a_bad_argument_is_one_line_naming_it(tmp_path, capsys, arguments, message):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    if "--out" not in arguments:
        arguments += ["--out", str(tmp_path / "page.html")]
    with pytest.raises(SystemExit) if "-1" in arguments else contextlib.nullcontext():
        assert main(["explore", *arguments]) == 1  # argparse's own errors exit, also with 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message.format(tmp=tmp_path) in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no page, no temporary


def test_the_readme_states_the_paper_page_s_size(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    stated = re.search(r"([\d.]+) MB for the paper GoogLeNet at 224x224", readme)
    out = tmp_path / "paper.html"
    assert main(["explore", "--model", "paper", "--out", str(out)]) == 0
    assert stated and f"{out.stat().st_size / 1e6:.1f}" == stated.group(1)


def test_a_network_gone_bad_shows_its_nans():
    model, _ = network_from(model="small")
    dict(model.named_parameters())["inception4a.branch2.1.conv.weight"].data[0, 0, 0, 0] = np.nan
    data = network_page(model, fixed_sample(3, 32))
    conv = next(op for op in data["ops"] if "inception4a.branch2.1.conv" in op["scope"])
    assert conv["value"]["nonfinite"] == 64 and conv["value"]["norm"] is None  # channel 0, 8x8
    assert data["info"]["loss"] == "nan"
    page = embedded_data(render_html(data))  # NaN is a JavaScript number: the page holds it
    numbers = [step["rule"]["backward"] for step in page["backward"] if "rule" in step]
    assert any(np.isnan(number) for number in numbers)


def test_a_page_shows_itself_in_jupyter(tmp_path):
    loss, names = scalar_graph()
    path = write_page(page_data(loss, names=names, title='lesson "1"'), tmp_path / "page.html")
    view = PageView(path)._repr_html_()
    assert view.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;')  # escaped: one attribute
    assert html.unescape(view[len('<iframe srcdoc="'):view.index('" style=')]) == path.read_text(
        "utf-8"
    )
