"""Inception-v4 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", 2016) built from explicit blocks.

The network is the paper's Figure 9, one table row per block type after the stem:

    block       repeats  output at 299x299   branches (widths)
    stem           1      384 x 35 x 35      3 convs, Mixed3a, Mixed4a, Mixed5a (Figure 3)
    InceptionA     4      384 x 35 x 35      1x1 | 1x1, 3x3 | 1x1, 3x3, 3x3 | pool, 1x1 (96 each)
    ReductionA     1     1024 x 17 x 17      k, l, m, n = 192, 224, 256, 384 (Table 1)
    InceptionB     7     1024 x 17 x 17      1x1 | 1x7, 7x1 | 7x1, 1x7, 7x1, 1x7 | pool, 1x1
    ReductionB     1     1536 x  8 x  8      3x3/2 192 | 1x7, 7x1, 3x3/2 320 | max pool
    InceptionC     3     1536 x  8 x  8      1x1 | 1x3 and 3x1 | 3x1, 1x3, 1x3 and 3x1 | pool

Module and parameter names follow timm's ``inception_v4`` (``features.0`` .. ``features.21``,
``branch0``.., ``conv``/``bn``, ``last_linear``), so a timm state dict loads unchanged; every
convolution is ``BasicConv2d`` with BatchNorm (conv without bias -> BatchNorm eps 0.001 -> ReLU),
as timm's ``ConvNormAct``, and the pooling branches average without counting the padding
(``count_include_pad=False``), as timm's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tinynet import functional as F
from tinynet import nn
from tinynet.models.googlenet import BasicConv2d, check_image_batch
from tinynet.tensor import as_tensor


def conv_bn(in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> BasicConv2d:
    """conv (no bias) -> BatchNorm(eps=0.001) -> ReLU: the only convolution of the family."""
    return BasicConv2d(in_channels, out_channels, kernel_size, stride, padding, batch_norm=True)


def conv_chain(in_channels: int, widths, kernels) -> nn.Sequential:
    """BasicConv2d layers one after another with 'same' padding at stride 1: ``kernels`` are
    (kh, kw) pairs such as (1, 7), ``widths`` their output channels."""
    layers = []
    for width, (kh, kw) in zip(widths, kernels):
        layers.append(conv_bn(in_channels, width, (kh, kw), padding=(kh // 2, kw // 2)))
        in_channels = width
    return nn.Sequential(*layers)


def average_pool_projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """The pooling branch: 3x3 average pool at stride 1 (padding not counted) -> 1x1 conv."""
    return nn.Sequential(
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        conv_bn(in_channels, out_channels, 1),
    )


# ----------------------------------------------------------------------------- the stem
class Mixed3a(nn.Module):
    """Stem, 147x147 -> 73x73: 3x3/2 max pool | 3x3/2 conv, concatenated."""

    def __init__(self, in_channels: int, conv: int):
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = conv_bn(in_channels, conv, 3, stride=2)
        self.out_channels = in_channels + conv

    def forward(self, x):
        # N x 64 x 147 x 147 -> N x (64 + 96) x 73 x 73
        return F.cat([self.maxpool(x), self.conv(x)], dim=1)


class Mixed4a(nn.Module):
    """Stem, 73x73 -> 71x71: 1x1 -> 3x3 valid | 1x1 -> 1x7 -> 7x1 -> 3x3 valid."""

    def __init__(self, in_channels: int, branch0, branch1):
        super().__init__()
        self.branch0 = nn.Sequential(
            conv_bn(in_channels, branch0[0], 1), conv_bn(branch0[0], branch0[1], 3)
        )
        self.branch1 = nn.Sequential(
            *conv_chain(in_channels, branch1[:3], [(1, 1), (1, 7), (7, 1)]),
            conv_bn(branch1[2], branch1[3], 3),
        )
        self.out_channels = branch0[-1] + branch1[-1]

    def forward(self, x):
        # N x 160 x 73 x 73 -> N x (96 + 96) x 71 x 71
        return F.cat([self.branch0(x), self.branch1(x)], dim=1)


class Mixed5a(nn.Module):
    """Stem, 71x71 -> 35x35: 3x3/2 conv | 3x3/2 max pool."""

    def __init__(self, in_channels: int, conv: int):
        super().__init__()
        self.conv = conv_bn(in_channels, conv, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.out_channels = conv + in_channels

    def forward(self, x):
        # N x 192 x 71 x 71 -> N x (192 + 192) x 35 x 35
        return F.cat([self.conv(x), self.maxpool(x)], dim=1)


class SmallStem(nn.Module):
    """A stem for 28-32 px images in place of the paper's (which takes 299 down to 35): two 3x3
    convs at stride 1, a 3x3/2 max pool (32 -> 16, 28 -> 14) and a 3x3 conv to the channels the
    first block expects, so the two grid reductions that follow still leave a grid (16 -> 7 -> 3).
    """

    def __init__(self, in_channels: int, out_channels: int, channels):
        super().__init__()
        self.conv1 = conv_bn(in_channels, channels(32), 3, padding=1)
        self.conv2 = conv_bn(channels(32), channels(64), 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv3 = conv_bn(channels(64), out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x):
        # N x C x 32 x 32
        x = self.conv2(self.conv1(x))
        # N x 64 x 32 x 32
        x = self.maxpool(x)
        # N x 64 x 16 x 16
        return self.conv3(x)  # N x out_channels x 16 x 16


# ----------------------------------------------------------------------------- the blocks
class InceptionA(nn.Module):
    """Inception-A (Figure 4), on the 35x35 grid:

        branch0: 1x1
        branch1: 1x1 reduce -> 3x3 (5x5 with branch1_kernel=5: Inception-ResNet-v2's Mixed_5b)
        branch2: 1x1 reduce -> 3x3 -> 3x3
        branch3: 3x3 average pool -> 1x1 projection
    """

    def __init__(self, in_channels: int, branch0, branch1, branch2, branch3, branch1_kernel=3):
        super().__init__()
        k = branch1_kernel
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1 = conv_chain(in_channels, branch1, [(1, 1), (k, k)])
        self.branch2 = conv_chain(in_channels, branch2, [(1, 1), (3, 3), (3, 3)])
        self.branch3 = average_pool_projection(in_channels, branch3)
        self.out_channels = branch0 + branch1[-1] + branch2[-1] + branch3

    def forward(self, x):
        # N x 384 x 35 x 35 -> N x (96 + 96 + 96 + 96) x 35 x 35
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return F.cat(branches, dim=1)


class ReductionA(nn.Module):
    """Reduction-A (Figure 7), 35x35 -> 17x17, shared by all three networks with the widths of
    Table 1 (k, l, m, n):

        branch0: 3x3/2 conv n
        branch1: 1x1 k -> 3x3 l -> 3x3/2 m
        branch2: 3x3/2 max pool (passes the input's channels)
    """

    def __init__(self, in_channels: int, k: int, l: int, m: int, n: int):  # noqa: E741
        super().__init__()
        self.branch0 = conv_bn(in_channels, n, 3, stride=2)
        self.branch1 = nn.Sequential(
            *conv_chain(in_channels, (k, l), [(1, 1), (3, 3)]), conv_bn(l, m, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)
        self.out_channels = n + m + in_channels

    def forward(self, x):
        # N x 384 x 35 x 35 -> N x (384 + 256 + 384) x 17 x 17 (Inception-v4)
        return F.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)


class InceptionB(nn.Module):
    """Inception-B (Figure 5), on the 17x17 grid, the 7x7 factorised into 1x7 and 7x1:

        branch0: 1x1
        branch1: 1x1 -> 1x7 -> 7x1
        branch2: 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7
        branch3: 3x3 average pool -> 1x1 projection
    """

    def __init__(self, in_channels: int, branch0, branch1, branch2, branch3):
        super().__init__()
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1 = conv_chain(in_channels, branch1, [(1, 1), (1, 7), (7, 1)])
        self.branch2 = conv_chain(
            in_channels, branch2, [(1, 1), (7, 1), (1, 7), (7, 1), (1, 7)]
        )
        self.branch3 = average_pool_projection(in_channels, branch3)
        self.out_channels = branch0 + branch1[-1] + branch2[-1] + branch3

    def forward(self, x):
        # N x 1024 x 17 x 17 -> N x (384 + 256 + 256 + 128) x 17 x 17
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return F.cat(branches, dim=1)


class ReductionB(nn.Module):
    """Inception-v4's Reduction-B (Figure 8), 17x17 -> 8x8:

        branch0: 1x1 -> 3x3/2
        branch1: 1x1 -> 1x7 -> 7x1 -> 3x3/2
        branch2: 3x3/2 max pool (passes the input's channels)
    """

    def __init__(self, in_channels: int, branch0, branch1):
        super().__init__()
        self.branch0 = nn.Sequential(
            conv_bn(in_channels, branch0[0], 1), conv_bn(branch0[0], branch0[1], 3, stride=2)
        )
        self.branch1 = nn.Sequential(
            *conv_chain(in_channels, branch1[:3], [(1, 1), (1, 7), (7, 1)]),
            conv_bn(branch1[2], branch1[3], 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch0[-1] + branch1[-1] + in_channels

    def forward(self, x):
        # N x 1024 x 17 x 17 -> N x (192 + 320 + 1024) x 8 x 8
        return F.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)


class InceptionC(nn.Module):
    """Inception-C (Figure 6), on the 8x8 grid, its 3x3s split into 1x3 and 3x1 side by side:

        branch0:                 1x1
        branch1_0 -> 1_1a | 1_1b: 1x1 -> (1x3 | 3x1)
        branch2_0 -> 2_1 -> 2_2 -> 2_3a | 2_3b: 1x1 -> 3x1 -> 1x3 -> (1x3 | 3x1)
        branch3:                 3x3 average pool -> 1x1 projection
    """

    def __init__(self, in_channels: int, branch0, branch1, branch2, branch3):
        super().__init__()
        (r1, out1), (r2, mid2a, mid2b, out2) = branch1, branch2
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1_0 = conv_bn(in_channels, r1, 1)
        self.branch1_1a = conv_bn(r1, out1, (1, 3), padding=(0, 1))
        self.branch1_1b = conv_bn(r1, out1, (3, 1), padding=(1, 0))
        self.branch2_0 = conv_bn(in_channels, r2, 1)
        self.branch2_1 = conv_bn(r2, mid2a, (3, 1), padding=(1, 0))
        self.branch2_2 = conv_bn(mid2a, mid2b, (1, 3), padding=(0, 1))
        self.branch2_3a = conv_bn(mid2b, out2, (1, 3), padding=(0, 1))
        self.branch2_3b = conv_bn(mid2b, out2, (3, 1), padding=(1, 0))
        self.branch3 = average_pool_projection(in_channels, branch3)
        self.out_channels = branch0 + 2 * out1 + 2 * out2 + branch3

    def forward(self, x):
        # N x 1536 x 8 x 8
        x0 = self.branch0(x)
        # N x 256 x 8 x 8
        x1 = self.branch1_0(x)
        x1 = F.cat([self.branch1_1a(x1), self.branch1_1b(x1)], dim=1)
        # N x (256 + 256) x 8 x 8
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        # N x 512 x 8 x 8
        x2 = F.cat([self.branch2_3a(x2), self.branch2_3b(x2)], dim=1)
        # N x (256 + 256) x 8 x 8
        x3 = self.branch3(x)
        # N x 256 x 8 x 8
        return F.cat([x0, x1, x2, x3], dim=1)  # N x 1536 x 8 x 8


# ----------------------------------------------------------------------------- the network
# Figure 9 after the stem (timm's features.6 .. features.21): (block, repeats, its widths as its
# constructor takes them, in channels of the paper before ``width`` scales them).
INCEPTION_V4_TABLE = (
    (InceptionA, 4, 96, (64, 96), (64, 96, 96), 96),
    (ReductionA, 1, 192, 224, 256, 384),
    (InceptionB, 7, 384, (192, 224, 256), (192, 192, 224, 224, 256), 128),
    (ReductionB, 1, (192, 192), (256, 256, 320, 320)),
    (InceptionC, 3, 256, (384, 256), (384, 448, 512, 256), 256),
)


@dataclass(frozen=True)
class InceptionV4Config:
    """The options of the Inception-v4 family (the Inception-ResNets add their residual scales).

    num_classes, in_channels: the classifier's outputs and the image's channels.
    dropout: before the classifier (the paper's keep probability 0.8).
    width:   multiplies every channel count (e.g. 0.25 for CPU-sized experiments).
    stem:    'imagenet' (the paper's: 299 -> 35, at least 75x75 images) or 'small' (3x3 convs,
             one 3x3/2 pool: 32 -> 16, 28 -> 14; at least 13x13 images).
    """

    num_classes: int = 1000
    in_channels: int = 3
    dropout: float = 0.2
    width: float = 1.0
    stem: str = "imagenet"

    def __post_init__(self):
        name = type(self).__name__
        if self.stem not in ("imagenet", "small"):
            raise ValueError(f"{name}: stem must be 'imagenet' or 'small'; got {self.stem!r}")
        for key in ("num_classes", "in_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {key} must be a positive int; got {value!r}")
        if not self.width > 0:
            raise ValueError(f"{name}: width must be > 0; got {self.width!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{name}: dropout must be in [0, 1); got {self.dropout!r}")

    def channels(self, count):
        """A channel count (or a tuple of them) of the paper scaled by ``width`` (at least 1)."""
        if isinstance(count, tuple):
            return tuple(self.channels(c) for c in count)
        return max(1, int(round(count * self.width)))

    @property
    def smallest_input(self) -> int:
        """The smallest image side the stem and the two valid 3x3/2 reductions leave a grid for."""
        return 75 if self.stem == "imagenet" else 13


def check_config_images(network: str, config: InceptionV4Config, x) -> None:
    """``check_image_batch`` with the configuration's channels, stem and smallest side."""
    check_image_batch(network, x, config.in_channels, config.stem, config.smallest_input, 299)


def classifier_head(config: InceptionV4Config, features: int):
    """Global average pool -> dropout -> linear, as timm's ``create_classifier``."""
    return nn.AdaptiveAvgPool2d(1), nn.Dropout(config.dropout), nn.Linear(
        features, config.num_classes
    )


class InceptionV4(nn.Module):
    """Inception-v4, timm's ``inception_v4`` at the defaults (42,679,816 parameters for 1000
    classes); see ``InceptionV4Config`` for the options."""

    def __init__(self, config: InceptionV4Config | None = None, **options):
        super().__init__()
        config = replace(config or InceptionV4Config(), **options)
        self.config = config
        c = config.channels
        if config.stem == "imagenet":
            stem = [
                conv_bn(config.in_channels, c(32), 3, stride=2),  # 32 x 149 x 149
                conv_bn(c(32), c(32), 3),  # 32 x 147 x 147
                conv_bn(c(32), c(64), 3, padding=1),  # 64 x 147 x 147
                Mixed3a(c(64), c(96)),  # 160 x 73 x 73
            ]
            stem.append(Mixed4a(stem[-1].out_channels, c((64, 96)), c((64, 64, 64, 96))))
            stem.append(Mixed5a(stem[-1].out_channels, c(192)))  # 384 x 35 x 35
        else:
            stem = [SmallStem(config.in_channels, c(384), c)]
        blocks, in_channels = list(stem), stem[-1].out_channels
        for block, repeats, *widths in INCEPTION_V4_TABLE:
            for _ in range(repeats):
                blocks.append(block(in_channels, *(c(w) for w in widths)))
                in_channels = blocks[-1].out_channels
        self.features = nn.Sequential(*blocks)
        self.global_pool, self.head_drop, self.last_linear = classifier_head(config, in_channels)

    def forward(self, x):
        x = as_tensor(x)
        check_config_images("InceptionV4", self.config, x)
        # N x 3 x 299 x 299
        x = self.features(x)
        # N x 1536 x 8 x 8 (each block's shape: INCEPTION_V4_TABLE)
        x = self.global_pool(x)
        # N x 1536 x 1 x 1
        x = self.head_drop(F.flatten(x, 1))
        # N x 1536
        return self.last_linear(x)  # N x 1000 (num_classes)


# The CPU-sized networks of the family: the small stem, width 0.25, 10 classes.
SMALL_OPTIONS = {"num_classes": 10, "width": 0.25, "stem": "small"}


def inception_v4(**options) -> InceptionV4:
    """timm's ``inception_v4``: same state_dict keys and shapes, so its weights load unchanged."""
    return InceptionV4(**options)


def inception_v4_small(**options) -> InceptionV4:
    """A CPU-sized Inception-v4 for 28x28 and 32x32 images: the small stem, width 0.25, 10
    classes."""
    return InceptionV4(**{**SMALL_OPTIONS, **options})
