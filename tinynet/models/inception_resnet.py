"""Inception-ResNet v1 and v2 (Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", 2016) built from explicit blocks.

Each residual block runs a few Inception branches side by side, concatenates them, projects
them back to the input's channels with a linear 1x1 conv (bias, no BatchNorm, no ReLU) and adds
the result, scaled, to its input: ``relu(x + scale * conv2d(cat(branches)))`` (Figure 20:
scaling by 0.1-0.3 keeps the wide networks stable).

    Inception-ResNet-v1 (the paper's figures)      Inception-ResNet-v2 (timm's)
    stem (Figure 14)        256 x 35 x 35          stem (Figure 3) + Mixed_5b  320 x 35 x 35
    5 x Block35 (Fig. 10)   256 x 35 x 35          10 x Block35 (Fig. 16)      320 x 35 x 35
    ReductionA 192,192,256,384  896 x 17 x 17      ReductionA 256,256,384,384  1088 x 17 x 17
    10 x Block17 (Fig. 11)  896 x 17 x 17          20 x Block17 (Fig. 17)      1088 x 17 x 17
    ResNetReductionB (12)  1792 x 8 x 8            ResNetReductionB (Fig. 18)  2080 x 8 x 8
    5 x Block8 (Fig. 13)   1792 x 8 x 8            9 x Block8 + Block8, no ReLU
                                                   1x1 conv                    1536 x 8 x 8

Inception-ResNet-v2's module and parameter names are timm's ``inception_resnet_v2``
(``conv2d_1a``, ``mixed_5b``, ``repeat``, ``mixed_6a``, ``repeat_1``, ``mixed_7a``,
``repeat_2``, ``block8``, ``conv2d_7b``, ``classif``; scales 0.17, 0.10, 0.20 and 1.0 for the
last block), so a timm state dict loads unchanged. Inception-ResNet-v1 has no upstream twin; it
uses the same names for the same parts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tinynet import functional as F
from tinynet import nn
from tinynet.models.inception_v4 import (
    SMALL_OPTIONS,
    InceptionA,
    InceptionV4Config,
    ReductionA,
    SmallStem,
    check_config_images,
    classifier_head,
    conv_bn,
    conv_chain,
)
from tinynet.tensor import as_tensor


class ResidualBlock(nn.Module):
    """What Block35, Block17 and Block8 share: the branches' concatenation, projected by the
    linear 1x1 ``conv2d`` (which each block builds after its branches, in timm's order) back to
    the input's channels, scaled and added to the input, then ReLU (unless ``relu=False``, as
    timm's last Block8)."""

    def __init__(self, in_channels: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale, self.relu = scale, relu
        self.out_channels = in_channels

    def branches(self, x) -> list:
        raise NotImplementedError

    def forward(self, x):
        # N x C x H x W -> each branch N x its channels x H x W
        up = self.conv2d(F.cat(self.branches(x), dim=1))
        # N x C x H x W: the residual, added scaled
        out = x + up * self.scale
        return F.relu(out) if self.relu else out


class Block35(ResidualBlock):
    """Inception-ResNet-A (v1: Figure 10, v2: Figure 16), on the 35x35 grid:

        branch0: 1x1
        branch1: 1x1 -> 3x3
        branch2: 1x1 -> 3x3 -> 3x3
    """

    def __init__(self, in_channels: int, branch0, branch1, branch2, scale=1.0):
        super().__init__(in_channels, scale)
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1 = conv_chain(in_channels, branch1, [(1, 1), (3, 3)])
        self.branch2 = conv_chain(in_channels, branch2, [(1, 1), (3, 3), (3, 3)])
        self.conv2d = nn.Conv2d(branch0 + branch1[-1] + branch2[-1], in_channels, 1)

    def branches(self, x):
        return [self.branch0(x), self.branch1(x), self.branch2(x)]


class Block17(ResidualBlock):
    """Inception-ResNet-B (v1: Figure 11, v2: Figure 17), on the 17x17 grid:

        branch0: 1x1
        branch1: 1x1 -> 1x7 -> 7x1
    """

    def __init__(self, in_channels: int, branch0, branch1, scale=1.0):
        super().__init__(in_channels, scale)
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1 = conv_chain(in_channels, branch1, [(1, 1), (1, 7), (7, 1)])
        self.conv2d = nn.Conv2d(branch0 + branch1[-1], in_channels, 1)

    def branches(self, x):
        return [self.branch0(x), self.branch1(x)]


class Block8(ResidualBlock):
    """Inception-ResNet-C (v1: Figure 13, v2: Figure 19), on the 8x8 grid:

        branch0: 1x1
        branch1: 1x1 -> 1x3 -> 3x1
    """

    def __init__(self, in_channels: int, branch0, branch1, scale=1.0, relu=True):
        super().__init__(in_channels, scale, relu)
        self.branch0 = conv_bn(in_channels, branch0, 1)
        self.branch1 = conv_chain(in_channels, branch1, [(1, 1), (1, 3), (3, 1)])
        self.conv2d = nn.Conv2d(branch0 + branch1[-1], in_channels, 1)

    def branches(self, x):
        return [self.branch0(x), self.branch1(x)]


class ResNetReductionB(nn.Module):
    """The Inception-ResNets' Reduction-B (v1: Figure 12, v2: Figure 18), 17x17 -> 8x8:

        branch0: 1x1 -> 3x3/2
        branch1: 1x1 -> 3x3/2
        branch2: 1x1 -> 3x3 -> 3x3/2
        branch3: 3x3/2 max pool (passes the input's channels)
    """

    def __init__(self, in_channels: int, branch0, branch1, branch2):
        super().__init__()
        self.branch0 = nn.Sequential(
            conv_bn(in_channels, branch0[0], 1), conv_bn(branch0[0], branch0[1], 3, stride=2)
        )
        self.branch1 = nn.Sequential(
            conv_bn(in_channels, branch1[0], 1), conv_bn(branch1[0], branch1[1], 3, stride=2)
        )
        self.branch2 = nn.Sequential(
            *conv_chain(in_channels, branch2[:2], [(1, 1), (3, 3)]),
            conv_bn(branch2[1], branch2[2], 3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)
        self.out_channels = branch0[-1] + branch1[-1] + branch2[-1] + in_channels

    def forward(self, x):
        # N x 1088 x 17 x 17 -> N x (384 + 288 + 320 + 1088) x 8 x 8 (v2)
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return F.cat(branches, dim=1)


# ----------------------------------------------------------------------------- the networks
def repeated(count: int, block, *args, **kwargs) -> nn.Sequential:
    """``count`` blocks of one kind in a row, each ``block(*args, **kwargs)``: timm's ``repeat``,
    ``repeat_1`` and ``repeat_2`` stages."""
    return nn.Sequential(*(block(*args, **kwargs) for _ in range(count)))


@dataclass(frozen=True)
class InceptionResNetConfig(InceptionV4Config):
    """``InceptionV4Config``'s options, and the residual scales of the Block35, Block17 and
    Block8 repeats (v1: 1.0, the paper's figures; the paper scales by 0.1-0.3 when a block has
    more than 1000 filters; v2: timm's 0.17, 0.10, 0.20)."""

    residual_scales: tuple = (1.0, 1.0, 1.0)

    def __post_init__(self):
        super().__post_init__()
        scales = self.residual_scales
        if not (
            isinstance(scales, tuple)
            and len(scales) == 3
            and all(isinstance(s, (int, float)) and 0 < s <= 1 for s in scales)
        ):
            raise ValueError(
                f"{type(self).__name__}: residual_scales must be 3 numbers in (0, 1] (Block35, "
                f"Block17, Block8); got {scales!r}"
            )


class InceptionResNet(nn.Module):
    """What v1 and v2 share: the config, the stem up to 71x71x192 (Figures 14 and 3 agree that
    far), the residual stages of their table and the classifier."""

    def __init__(self, config: InceptionResNetConfig):
        super().__init__()
        self.config = config
        c = config.channels
        if config.stem == "imagenet":
            self.conv2d_1a = conv_bn(config.in_channels, c(32), 3, stride=2)
            self.conv2d_2a = conv_bn(c(32), c(32), 3)
            self.conv2d_2b = conv_bn(c(32), c(64), 3, padding=1)
            self.maxpool_3a = nn.MaxPool2d(3, stride=2)
            self.conv2d_3b = conv_bn(c(64), c(80), 1)
            self.conv2d_4a = conv_bn(c(80), c(192), 3)

    def _checked(self, x):
        x = as_tensor(x)
        check_config_images(type(self).__name__, self.config, x)
        return x

    def _stem_to_71(self, x):
        # N x 3 x 299 x 299
        x = self.conv2d_1a(x)
        # N x 32 x 149 x 149
        x = self.conv2d_2a(x)
        # N x 32 x 147 x 147
        x = self.conv2d_2b(x)
        # N x 64 x 147 x 147
        x = self.maxpool_3a(x)
        # N x 64 x 73 x 73
        x = self.conv2d_3b(x)
        # N x 80 x 73 x 73
        x = self.conv2d_4a(x)
        # N x 192 x 71 x 71
        return x

    def _head(self, x):
        x = self.global_pool(x)
        # N x C x 1 x 1
        x = self.head_drop(F.flatten(x, 1))
        return self.classif(x)  # N x num_classes


class InceptionResNetV2(InceptionResNet):
    """Inception-ResNet-v2, timm's ``inception_resnet_v2`` at the defaults (55,843,464
    parameters for 1000 classes); see ``InceptionResNetConfig`` for the options."""

    def __init__(self, config: InceptionResNetConfig | None = None, **options):
        super().__init__(replace(config or V2, **options))
        c = self.config.channels
        if self.config.stem == "imagenet":
            self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        else:
            self.stem = SmallStem(self.config.in_channels, c(192), c)
        self.mixed_5b = InceptionA(c(192), c(96), c((48, 64)), c((64, 96, 96)), c(64), 5)
        # The stages after the stem, a row each (widths as each block's constructor takes them);
        # the residual scales of the Block35, Block17 and Block8 repeats come from the config.
        scale35, scale17, scale8 = self.config.residual_scales
        n = self.mixed_5b.out_channels
        self.repeat = repeated(10, Block35, n, c(32), c((32, 32)), c((32, 48, 64)), scale=scale35)
        self.mixed_6a = ReductionA(n, c(256), c(256), c(384), c(384))
        n = self.mixed_6a.out_channels
        self.repeat_1 = repeated(20, Block17, n, c(192), c((128, 160, 192)), scale=scale17)
        self.mixed_7a = ResNetReductionB(n, c((256, 384)), c((256, 288)), c((256, 288, 320)))
        n = in_channels = self.mixed_7a.out_channels
        self.repeat_2 = repeated(9, Block8, n, c(192), c((192, 224, 256)), scale=scale8)
        self.block8 = Block8(in_channels, c(192), c((192, 224, 256)), relu=False)
        self.conv2d_7b = conv_bn(in_channels, c(1536), 1)
        self.global_pool, self.head_drop, self.classif = classifier_head(self.config, c(1536))

    def forward(self, x):
        x = self._checked(x)
        if self.config.stem == "imagenet":
            x = self._stem_to_71(x)
            # N x 192 x 71 x 71
            x = self.maxpool_5a(x)
            # N x 192 x 35 x 35
        else:
            x = self.stem(x)
        x = self.mixed_5b(x)
        # N x 320 x 35 x 35
        x = self.repeat(x)
        # N x 320 x 35 x 35
        x = self.mixed_6a(x)
        # N x 1088 x 17 x 17
        x = self.repeat_1(x)
        # N x 1088 x 17 x 17
        x = self.mixed_7a(x)
        # N x 2080 x 8 x 8
        x = self.repeat_2(x)
        # N x 2080 x 8 x 8
        x = self.block8(x)
        # N x 2080 x 8 x 8
        x = self.conv2d_7b(x)
        # N x 1536 x 8 x 8
        return self._head(x)  # N x 1000 (num_classes)


class InceptionResNetV1(InceptionResNet):
    """Inception-ResNet-v1 as the paper's figures draw it (Figure 15: its own stem, 5/10/5
    residual blocks, average pooling, dropout); see ``InceptionResNetConfig`` for the options."""

    def __init__(self, config: InceptionResNetConfig | None = None, **options):
        super().__init__(replace(config or V1, **options))
        c = self.config.channels
        if self.config.stem == "imagenet":
            self.conv2d_4b = conv_bn(c(192), c(256), 3, stride=2)
        else:
            self.stem = SmallStem(self.config.in_channels, c(256), c)
        # The stages after the stem, a row each, as in Inception-ResNet-v2 above.
        scale35, scale17, scale8 = self.config.residual_scales
        n = c(256)
        self.repeat = repeated(5, Block35, n, c(32), c((32, 32)), c((32, 32, 32)), scale=scale35)
        self.mixed_6a = ReductionA(n, c(192), c(192), c(256), c(384))
        n = self.mixed_6a.out_channels
        self.repeat_1 = repeated(10, Block17, n, c(128), c((128, 128, 128)), scale=scale17)
        self.mixed_7a = ResNetReductionB(n, c((256, 384)), c((256, 256)), c((256, 256, 256)))
        n = self.mixed_7a.out_channels
        self.repeat_2 = repeated(5, Block8, n, c(192), c((192, 192, 192)), scale=scale8)
        self.global_pool, self.head_drop, self.classif = classifier_head(self.config, n)

    def forward(self, x):
        x = self._checked(x)
        if self.config.stem == "imagenet":
            x = self._stem_to_71(x)
            # N x 192 x 71 x 71
            x = self.conv2d_4b(x)
            # N x 256 x 35 x 35
        else:
            x = self.stem(x)
        x = self.repeat(x)
        # N x 256 x 35 x 35
        x = self.mixed_6a(x)
        # N x 896 x 17 x 17
        x = self.repeat_1(x)
        # N x 896 x 17 x 17
        x = self.mixed_7a(x)
        # N x 1792 x 8 x 8
        x = self.repeat_2(x)
        # N x 1792 x 8 x 8
        return self._head(x)  # N x 1000 (num_classes)


V1 = InceptionResNetConfig()
V2 = InceptionResNetConfig(residual_scales=(0.17, 0.10, 0.20))


def inception_resnet_v1(**options) -> InceptionResNetV1:
    """Inception-ResNet-v1 of the paper's figures (residual scales 1.0; pass residual_scales)."""
    return InceptionResNetV1(V1, **options)


def inception_resnet_v1_small(**options) -> InceptionResNetV1:
    """A CPU-sized Inception-ResNet-v1 for 28x28 and 32x32 images: the small stem, width 0.25,
    10 classes, and v2's residual scales (0.17, 0.10, 0.20), the paper's remedy for residual
    stacks that do not train: with the figures' 1.0 it reached 92% on the digits where the
    scaled one reaches 98% (benchmarks/inception_digits.md)."""
    scaled = {"residual_scales": V2.residual_scales}
    return InceptionResNetV1(V1, **{**SMALL_OPTIONS, **scaled, **options})


def inception_resnet_v2(**options) -> InceptionResNetV2:
    """timm's ``inception_resnet_v2``: same state_dict keys and shapes, so its weights load
    unchanged."""
    return InceptionResNetV2(V2, **options)


def inception_resnet_v2_small(**options) -> InceptionResNetV2:
    """A CPU-sized Inception-ResNet-v2 for 28x28 and 32x32 images: the small stem, width 0.25,
    10 classes."""
    return InceptionResNetV2(V2, **{**SMALL_OPTIONS, **options})
