"""Inception-ResNet v1 and v2: v2 against timm's own network (parameter count, state-dict
names, eval logits, training gradients), both networks' shapes at 299x299 against the paper's
figures, the scaled residual add, a gradient check of every block type, the reference path, and
bad options."""

import inspect
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet.cli import main
from tinynet.models import (
    Block8,
    Block17,
    Block35,
    InceptionResNetConfig,
    InceptionResNetV1,
    InceptionResNetV2,
    ResNetReductionB,
    inception_resnet_v1,
    inception_resnet_v1_small,
    inception_resnet_v2,
    inception_resnet_v2_small,
    inception_v4_small,
)

from compare import assert_close, module_gradcheck
from strategies import seeds, uniform
from timm_twins import assert_eval_logits_match, assert_training_gradients_match, timm_network


def test_v2_parameter_count_and_state_dict_are_timms(torch):
    ours = inception_resnet_v2()
    assert sum(p.size for p in ours.parameters()) == 55_843_464
    theirs = timm_network(torch, "inception_resnet_v2", num_classes=1000).state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert all(value.shape == tuple(theirs[key].shape) for key, value in ours.state_dict().items())
    scales = [b.scale for b in (ours.repeat[0], ours.repeat_1[0], ours.repeat_2[0], ours.block8)]
    assert scales == [0.17, 0.10, 0.20, 1.0] and not ours.block8.relu


def test_v2_eval_logits_match_timm(torch):
    assert_eval_logits_match(
        torch, inception_resnet_v2(num_classes=5), timm_network(torch, "inception_resnet_v2")
    )


def test_v2_training_gradients_match_timm_in_float64(torch):
    assert_training_gradients_match(
        torch,
        inception_resnet_v2(num_classes=5, dropout=0.0),
        timm_network(torch, "inception_resnet_v2"),
    )


# ------------------------------------------------------------------ shapes at 299x299
def _commented_shapes(network_class):
    """The ``# N x C x H x W`` comment under each ``x = self.<layer>(x)`` line of forward and
    of the stem the two networks share."""
    lines = inspect.getsource(network_class._stem_to_71).splitlines()
    lines += inspect.getsource(network_class.forward).splitlines()
    commented = {}
    for line, below in zip(lines, lines[1:]):
        call = re.fullmatch(r"\s*x = self\.([a-z]\w*)\(x\)", line)
        shape = re.match(r"\s*# N x (\d+(?: x \d+)*)", below)
        if call and shape:
            commented[call[1]] = tuple(int(v) for v in shape[1].split(" x "))
    return commented


# The paper's figures: v1's stem (Figure 14) ends at 35x35x256, its grids are 35x35x256,
# 17x17x896 and 8x8x1792 (Figures 10-13); v2's are 35x35x320, 17x17x1088, 8x8x2080 (16-19).
PAPER_GRIDS = {
    InceptionResNetV1: {
        "conv2d_4b": (256, 35, 35), "repeat": (256, 35, 35), "mixed_6a": (896, 17, 17),
        "repeat_1": (896, 17, 17), "mixed_7a": (1792, 8, 8), "repeat_2": (1792, 8, 8),
    },
    InceptionResNetV2: {
        "mixed_5b": (320, 35, 35), "repeat": (320, 35, 35), "mixed_6a": (1088, 17, 17),
        "repeat_1": (1088, 17, 17), "mixed_7a": (2080, 8, 8), "repeat_2": (2080, 8, 8),
        "conv2d_7b": (1536, 8, 8),
    },
}  # fmt: skip


@pytest.mark.parametrize("build", [inception_resnet_v1, inception_resnet_v2])
def test_shapes_at_299_are_the_papers_and_the_forward_comments(build):
    model = build(num_classes=10).eval()
    commented = _commented_shapes(type(model))
    assert PAPER_GRIDS[type(model)].items() <= commented.items()
    shapes = {}
    for name in commented:
        getattr(model, name).register_forward_hook(
            lambda m, i, out, name=name: shapes.update({name: out.shape[1:]})
        )
    with tinynet.no_grad():
        assert model(np.zeros((1, 3, 299, 299), np.float32)).shape == (1, 10)
    assert shapes == commented


# ------------------------------------------------------------------ the blocks
BLOCKS = {
    "Block35": (lambda: Block35(2, 2, (2, 2), (2, 2, 3), scale=0.3), 4),
    "Block17": (lambda: Block17(2, 2, (2, 2, 3), scale=0.2), 4),
    "Block8": (lambda: Block8(2, 2, (2, 2, 3), scale=0.5), 4),
    "Block8 without ReLU": (lambda: Block8(2, 2, (2, 2, 3), relu=False), 4),
    "ResNetReductionB": (lambda: ResNetReductionB(2, (2, 3), (2, 2), (2, 2, 3)), 7),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gradients(name):
    build, size = BLOCKS[name]
    tinynet.manual_seed(0)
    block = build().double()
    x = tinynet.tensor(uniform(1, (2, 2, size, size)), requires_grad=True)
    assert block(x).shape[1] == block.out_channels
    assert module_gradcheck(block, x)


@settings(max_examples=4)
@given(scale=st.floats(0.05, 1.0), seed=seeds)
def test_the_residual_is_added_scaled(scale, seed):
    """Without the ReLU, out - x is scale times the projected branches: the same for every
    scale once divided by it."""
    tinynet.manual_seed(seed % 1000)
    block = Block8(3, 2, (2, 2, 2), relu=False).double().eval()
    x = uniform(seed, (2, 3, 3, 3))
    with tinynet.no_grad():
        block.scale = 1.0
        unscaled = block(x).data - x
        block.scale = scale
        scaled = block(x).data - x
    assert_close(scaled, scale * unscaled)
    block.relu = True
    with tinynet.no_grad():
        assert_close(block(x), np.maximum(x + scaled, 0.0))


# ------------------------------------------------------------------ options and paths
def test_v1_residual_scales_are_the_option():
    model = inception_resnet_v1(residual_scales=(0.3, 0.1, 0.2))
    assert [s[0].scale for s in (model.repeat, model.repeat_1, model.repeat_2)] == [0.3, 0.1, 0.2]
    assert [len(s) for s in (model.repeat, model.repeat_1, model.repeat_2)] == [5, 10, 5]
    assert inception_resnet_v1().config.residual_scales == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"residual_scales must be 3 numbers in \(0, 1\]"):
        InceptionResNetConfig(residual_scales=(0.1, 0.0, 0.2))
    with pytest.raises(ValueError, match="InceptionResNetConfig: stem must be"):
        InceptionResNetV1(stem="large")


@pytest.mark.parametrize("build", [inception_resnet_v1_small, inception_resnet_v2_small])
def test_the_small_networks_take_28_and_32_pixel_images(build):
    model = build(in_channels=1, num_classes=4).eval()
    assert model.config.width == 0.25
    for side in (28, 32):
        assert model(np.zeros((2, 1, side, side), np.float32)).shape == (2, 4)
    with pytest.raises(ValueError, match="12x12 are too small for the 'small' stem"):
        model(np.zeros((1, 1, 12, 12), np.float32))


@pytest.mark.parametrize(
    "build", [inception_v4_small, inception_resnet_v1_small, inception_resnet_v2_small]
)
def test_the_reference_path_gives_the_same_outputs_and_gradients(build):
    """The family's small networks (Inception-v4's too) on both paths, in training mode."""
    tinynet.manual_seed(0)
    model = build(width=0.125, dropout=0.0).double()
    x, target = uniform(1, (2, 3, 32, 32), 0, 1), np.array([3, 5])
    results = []
    for use_reference in (False, True):
        model.zero_grad()
        with tinynet.use_reference(use_reference):
            logits = model(x)
            tinynet.functional.cross_entropy(logits, target).backward()
        results.append((logits.data, {k: p.grad for k, p in model.named_parameters()}))
    (logits, grads), (r_logits, r_grads) = results
    assert_close(r_logits, logits)
    for key, grad in grads.items():
        assert_close(r_grads[key], grad, scale=float(np.abs(grad).max()))


# ------------------------------------------------------------------ the command
@pytest.mark.parametrize(
    "model", ["inception_v4_small", "inception_resnet_v1_small", "inception_resnet_v2_small"]
)
def test_the_small_networks_train_from_the_command(tmp_path, capsys, model):
    argv = ["train", "--model", model, "--width", "0.125", "--epochs", "1", "--batch-size", "8"]
    argv += ["--max-batches", "1", "--label-smoothing", "0.1", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"]), record


@pytest.mark.parametrize(
    "model, parameters",
    [
        ("inception_v4", "42,679,816"),
        ("inception_resnet_v2", "55,843,464"),
        ("inception_resnet_v1", "22,756,328"),
    ],
)
def test_summary_at_299(capsys, model, parameters):
    assert main(["summary", "--model", model]) == 0
    out = capsys.readouterr().out
    assert "on input (1, 3, 299, 299)" in out and f"parameters: {parameters} " in out
