"""Exercise 9: an Inception block assembled from tinynet.nn layers, equal to tinynet's own."""

import numpy as np

from tinynet import nn
from tinynet.exercises.exercise import Exercise
from tinynet.functional import cat, relu


class ConvReLU(nn.Module):
    """conv -> ReLU, the conv named ``conv`` (state_dict keys ``conv.weight``, ``conv.bias``)."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x):
        return relu(self.conv(x))


class InceptionBlock(nn.Module):
    """The paper's four branches on one input, concatenated on the channels."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = ConvReLU(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            ConvReLU(in_channels, ch3x3red, 1), ConvReLU(ch3x3red, ch3x3, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            ConvReLU(in_channels, ch5x5red, 1), ConvReLU(ch5x5red, ch5x5, 5, padding=2)
        )
        pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.branch4 = nn.Sequential(pool, ConvReLU(in_channels, pool_proj, 1))

    def forward(self, x):
        # N x in_channels x H x W -> N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W
        return cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


def inception_block(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
    """An Inception block (GoogLeNet's, without BatchNorm) as an ``nn.Module``, built from
    tinynet.nn layers; its output is the four branches concatenated on the channels (dim 1):

        branch1: 1x1 conv to ch1x1 -> ReLU
        branch2: 1x1 conv to ch3x3red -> ReLU -> 3x3 conv (padding 1) to ch3x3 -> ReLU
        branch3: 1x1 conv to ch5x5red -> ReLU -> 5x5 conv (padding 2) to ch5x5 -> ReLU
        branch4: 3x3 max pool (stride 1, padding 1, ceil_mode=True) -> 1x1 conv to pool_proj
                 -> ReLU

    Every conv has a bias. The spatial size is unchanged; the output has
    ch1x1 + ch3x3 + ch5x5 + pool_proj channels. The check loads tinynet's ``Inception``'s
    weights into your block with ``load_state_dict``, so name the layers as torchvision (and
    tinynet) do: ``branch1.conv``, ``branch2[0].conv``, ``branch2[1].conv``, ``branch3[0].conv``,
    ``branch3[1].conv``, ``branch4[1].conv`` (``branch4[0]`` the pool), i.e. state_dict keys
    ``branch1.conv.weight``, ``branch2.0.conv.bias`` and so on.

    Hint: a small Module holding ``self.conv = nn.Conv2d(...)`` whose forward applies ReLU
    after it gives the ``.conv`` names; nn.Sequential numbers its layers 0, 1, ...
    (``cat`` and ``relu`` of tinynet.functional are allowed here, nothing else of it)."""
    return InceptionBlock(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)


CONFIGS = ((4, 2, 3, 4, 1, 2, 2), (3, 1, 1, 1, 1, 1, 1), (5, 3, 2, 3, 2, 3, 1))
BRANCH_HINTS = (
    "branch1 is a 1x1 conv then ReLU",
    "branch2 is a 1x1 conv to ch3x3red, ReLU, a 3x3 conv with padding 1, ReLU",
    "branch3 is a 1x1 conv to ch5x5red, ReLU, a 5x5 conv with padding 2, ReLU",
    "branch4 max-pools 3x3 with stride 1 and padding 1 (ceil_mode=True) before its 1x1 conv "
    "and ReLU",
)


def _parameter_count(module) -> int:
    return sum(p.data.size for p in module.parameters())


def check(answer, max_examples=None, seed=0):
    """For each of CONFIGS: the parameter count and the state_dict's names equal tinynet's
    ``Inception``'s, and with its weights loaded the output equals it on two inputs (max_examples:
    the configurations are fixed, not drawn)."""
    from tinynet import tensor
    from tinynet.models.googlenet import Inception

    rng = np.random.default_rng(seed)
    for config in CONFIGS:
        call = f"inception_block{config}"
        reference = Inception(*config)
        for module in reference.modules():  # weights that make every branch matter
            for p in module.parameters():
                p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)
        block = answer(*config)
        if not isinstance(block, nn.Module):
            raise AssertionError(f"{call} returned {type(block).__name__}; expected an nn.Module")
        count, expected = _parameter_count(block), _parameter_count(reference)
        if count != expected:
            branches = ", ".join(f"{name} {_parameter_count(child):,}"
                                 for name, child in reference.named_children())  # fmt: skip
            hint = ("a conv from C to O channels with a k x k kernel has O·C·k·k weights and O "
                    "biases; the reductions are 1x1 convs")  # fmt: skip
            mine = dict(block.named_children())
            for (name, child), branch_hint in zip(reference.named_children(), BRANCH_HINTS):
                if name in mine and _parameter_count(mine[name]) != _parameter_count(child):
                    hint = f"{name} has {_parameter_count(mine[name]):,} of them: {branch_hint}"
                    break
            raise AssertionError(
                f"{call} has {count:,} parameters; tinynet's Inception{config} has {expected:,} "
                f"({branches})\nhint: {hint}"
            )
        keys, expected_keys = list(block.state_dict()), list(reference.state_dict())
        if sorted(keys) != sorted(expected_keys):
            missing = sorted(set(expected_keys) - set(keys))
            extra = sorted(set(keys) - set(expected_keys))
            raise AssertionError(
                f"{call}: its state_dict keys differ from Inception's: missing {missing}, "
                f"unexpected {extra}\nhint: name the layers branch1.conv, branch2[0].conv, "
                f"branch2[1].conv, branch3[0].conv, branch3[1].conv and branch4[1].conv"
            )
        block.load_state_dict(reference.state_dict())
        for shape in ((2, config[0], 6, 5), (1, config[0], 3, 3)):
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            got = np.asarray(block(tensor(x)).data)
            want = reference(tensor(x)).data
            if got.shape != want.shape:
                raise AssertionError(f"{call} on an input of shape {shape}: output shape "
                                     f"{got.shape}, expected {want.shape}")  # fmt: skip
            start = 0
            for width, hint in zip((config[1], config[3], config[5], config[6]), BRANCH_HINTS):
                part, expected_part = got[:, start : start + width], want[:, start : start + width]
                if not np.allclose(part, expected_part, rtol=1e-4, atol=1e-5):
                    raise AssertionError(
                        f"{call} on an input of shape {shape}: output channels "
                        f"{start}..{start + width - 1} differ from Inception's (worst by "
                        f"{np.abs(part - expected_part).max():.3g})\nhint: {hint}, and the "
                        f"branches are concatenated in the order 1, 2, 3, 4"
                    )
                start += width


EXERCISE = Exercise(
    name="inception_block",
    entry="inception_block",
    summary="Assemble an Inception block from tinynet.nn layers, equal to tinynet's Inception.",
    lessons=("03_inception_block.py",),
    solution=(ConvReLU, InceptionBlock, inception_block),
    stub=(inception_block,),
    to_write=frozenset({"inception_block"}),
    check=check,
    allowed=("tinynet.nn", "tinynet.functional.cat", "tinynet.functional.relu"),
    imports="from tinynet import nn\nfrom tinynet.functional import cat, relu\n",
)
