"""Inception-v4: timm's parameter count and state-dict names, the paper's shapes at 299x299,
eval logits and training gradients equal to timm's own network given the same weights, a
gradient check of every block type, the reference path, and bad input."""

import numpy as np
import pytest

import tinynet
from tinynet.models import (
    InceptionV4,
    Mixed3a,
    Mixed4a,
    Mixed5a,
    ReductionA,
    ReductionB,
    SmallStem,
    inception_v4,
    inception_v4_small,
)
from tinynet.models.inception_v4 import InceptionA, InceptionB, InceptionC

from compare import module_gradcheck
from strategies import uniform
from timm_twins import (
    SMALLEST,
    assert_eval_logits_match,
    assert_training_gradients_match,
    timm_network,
)


def _count(model):
    return sum(p.size for p in model.parameters())


def test_parameter_count_and_state_dict_are_timms(torch):
    ours = inception_v4()
    assert _count(ours) == 42_679_816
    theirs = timm_network(torch, "inception_v4", num_classes=1000).state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert all(value.shape == tuple(theirs[key].shape) for key, value in ours.state_dict().items())
    assert ours.state_dict()["features.21.branch2_3b.conv.weight"].shape == (256, 512, 3, 1)


def test_stage_shapes_at_299_are_the_papers():
    """Figure 9: the stem's 35x35x384, Inception-A, Reduction-A's 17x17x1024, Inception-B,
    Reduction-B's 8x8x1536, Inception-C; the stem's own steps as Figure 3 draws them."""
    model = inception_v4(num_classes=10).eval()
    expected = {
        0: (32, 149, 149), 1: (32, 147, 147), 2: (64, 147, 147),
        3: (160, 73, 73), 4: (192, 71, 71), 5: (384, 35, 35),
        9: (384, 35, 35), 10: (1024, 17, 17), 17: (1024, 17, 17),
        18: (1536, 8, 8), 21: (1536, 8, 8),
    }  # fmt: skip
    shapes = {}
    for index in expected:
        model.features[index].register_forward_hook(
            lambda m, i, out, index=index: shapes.update({index: out.shape[1:]})
        )
    with tinynet.no_grad():
        assert model(np.zeros((1, 3, 299, 299), np.float32)).shape == (1, 10)
    assert shapes == expected


def test_eval_logits_match_timm(torch):
    assert_eval_logits_match(
        torch, inception_v4(num_classes=5), timm_network(torch, "inception_v4")
    )


def test_training_gradients_match_timm_in_float64(torch):
    assert_training_gradients_match(
        torch, inception_v4(num_classes=5, dropout=0.0), timm_network(torch, "inception_v4")
    )


# ------------------------------------------------------------------ every block's gradients
def _channels(n):
    return 2


BLOCKS = {
    "Mixed3a": (lambda: Mixed3a(2, 3), 7),
    "Mixed4a": (lambda: Mixed4a(2, (2, 3), (2, 2, 2, 3)), 5),
    "Mixed5a": (lambda: Mixed5a(2, 3), 7),
    "InceptionA": (lambda: InceptionA(2, 2, (2, 3), (2, 2, 3), 2), 5),
    "InceptionA 5x5": (lambda: InceptionA(2, 2, (2, 3), (2, 2, 3), 2, branch1_kernel=5), 5),
    "ReductionA": (lambda: ReductionA(2, 2, 2, 3, 3), 7),
    "InceptionB": (lambda: InceptionB(2, 2, (2, 2, 3), (2, 2, 2, 2, 3), 2), 5),
    "ReductionB": (lambda: ReductionB(2, (2, 3), (2, 2, 2, 3)), 7),
    "InceptionC": (lambda: InceptionC(2, 2, (2, 2), (2, 2, 2, 2), 2), 4),
    "SmallStem": (lambda: SmallStem(2, 3, _channels), 6),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gradients(name):
    build, size = BLOCKS[name]
    tinynet.manual_seed(0)
    block = build().double()
    x = tinynet.tensor(uniform(1, (2, 2, size, size)), requires_grad=True)
    out = block(x)
    assert out.shape[1] == block.out_channels
    assert module_gradcheck(block, x)


# ------------------------------------------------------------------ options and paths
def test_options_change_what_they_say():
    model = inception_v4(num_classes=7, in_channels=1, width=0.25, stem="small")
    assert model.config.width == 0.25 and model.features[0].conv1.conv.in_channels == 1
    assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 7)
    assert model.features[-1].out_channels == 384  # 1536 x 0.25
    assert _count(inception_v4_small()) < _count(inception_v4()) / 15


def test_bad_input_and_options_are_clear_errors():
    model = inception_v4_small().eval()
    with pytest.raises(ValueError, match=r"InceptionV4: input must be .*\(N, 3, H, W\); got"):
        model(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="12x12 are too small for the 'small' stem.* 13x13"):
        model(np.zeros((1, 3, 12, 12), np.float32))
    model(np.zeros((1, 3, 13, 13), np.float32))  # the smallest it takes
    with pytest.raises(ValueError, match=f"74x74 are too small .* {SMALLEST}x{SMALLEST}"):
        inception_v4().eval()(np.zeros((1, 3, 74, 74), np.float32))
    for options, message in (
        ({"stem": "tiny"}, "stem must be 'imagenet' or 'small'; got 'tiny'"),
        ({"width": 0}, "width must be > 0; got 0"),
        ({"num_classes": 0}, "num_classes must be a positive int; got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\); got 1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            InceptionV4(**options)
