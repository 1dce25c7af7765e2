"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
2015) built from explicit blocks, with torchvision's module and parameter names, so
torchvision's ``inception_v3`` state dict loads into ``inception_v3()`` unchanged.

Every convolution is ``BasicConv2d`` with BatchNorm (conv without bias -> BatchNorm(eps=0.001)
-> ReLU). The paper's ideas, one block type each:

    InceptionA  35x35: the 5x5 factorised into two 3x3 (and torchvision's extra 5x5 branch)
    InceptionB  35 -> 17 grid reduction: stride-2 convolutions beside a stride-2 max pool
    InceptionC  17x17: the 7x7 factorised into 1x7 and 7x1
    InceptionD  17 -> 8 grid reduction
    InceptionE  8x8: expanded filter banks, the 3x3 split into parallel 1x3 and 3x1
    InceptionAux the BatchNorm auxiliary classifier on the 17x17 grid

The network is the table below, one row per block with its branch widths; at 299x299 the three
stages leave 35x35x288, 17x17x768 and 8x8x2048, as the paper's table 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

from tinynet import functional as F
from tinynet import nn
from tinynet.models.googlenet import BasicConv2d, check_image_batch, transform_input
from tinynet.tensor import Tensor, as_tensor

conv_bn = partial(BasicConv2d, batch_norm=True)

# The stem's convolutions (kernel, stride, padding) for the paper's 299x299 images, and for the
# small-image stem ('small'): the same convolutions (so the same parameters) at stride 1 with
# padding, without the first max pool: 32 -> 15 and 28 -> 13 into the 35x35 stage.
STEM = {
    "imagenet": {
        "1a": (3, 2, 0),
        "2a": (3, 1, 0),
        "2b": (3, 1, 1),
        "3b": (1, 1, 0),
        "4a": (3, 1, 0),
    },
    "small": {"1a": (3, 1, 1), "2a": (3, 1, 1), "2b": (3, 1, 1), "3b": (1, 1, 0), "4a": (3, 1, 1)},
}


class InceptionA(nn.Module):
    """The 35x35 block: four branches on the same input, concatenated on channels.

        branch1x1:    1x1
        branch5x5:    1x1 reduce -> 5x5
        branch3x3dbl: 1x1 reduce -> 3x3 -> 3x3   (a 5x5 receptive field, factorised)
        branch_pool:  3x3 average pool, stride 1 (padding counted) -> 1x1 projection

    out_channels = ch1x1 + ch5x5 + ch3x3dbl + pool_proj; the spatial size is unchanged.
    """

    def __init__(self, in_channels, ch1x1, ch5x5red, ch5x5, ch3x3dblred, ch3x3dbl, pool_proj):
        super().__init__()
        self.out_channels = ch1x1 + ch5x5 + ch3x3dbl + pool_proj
        self.branch1x1 = conv_bn(in_channels, ch1x1, 1)
        self.branch5x5_1 = conv_bn(in_channels, ch5x5red, 1)
        self.branch5x5_2 = conv_bn(ch5x5red, ch5x5, 5, padding=2)
        self.branch3x3dbl_1 = conv_bn(in_channels, ch3x3dblred, 1)
        self.branch3x3dbl_2 = conv_bn(ch3x3dblred, ch3x3dbl, 3, padding=1)
        self.branch3x3dbl_3 = conv_bn(ch3x3dbl, ch3x3dbl, 3, padding=1)
        self.branch_pool = conv_bn(in_channels, pool_proj, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return F.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 without a representational bottleneck: stride-2
    convolutions beside a stride-2 max pool, concatenated.

        branch3x3:    3x3, stride 2
        branch3x3dbl: 1x1 reduce -> 3x3 -> 3x3, stride 2
        branch_pool:  3x3 max pool, stride 2 (the input's channels pass through)

    out_channels = ch3x3 + ch3x3dbl + in_channels; H -> (H - 3) // 2 + 1.
    """

    def __init__(self, in_channels, ch3x3, ch3x3dblred, ch3x3dbl):
        super().__init__()
        self.out_channels = ch3x3 + ch3x3dbl + in_channels
        self.branch3x3 = conv_bn(in_channels, ch3x3, 3, stride=2)
        self.branch3x3dbl_1 = conv_bn(in_channels, ch3x3dblred, 1)
        self.branch3x3dbl_2 = conv_bn(ch3x3dblred, ch3x3dbl, 3, padding=1)
        self.branch3x3dbl_3 = conv_bn(ch3x3dbl, ch3x3dbl, 3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, 3, stride=2)
        return F.cat([branch3x3, branch3x3dbl, branch_pool], dim=1)


class InceptionC(nn.Module):
    """The 17x17 block: the 7x7 factorised into asymmetric 1x7 and 7x1 convolutions.

        branch1x1:    1x1
        branch7x7:    1x1 reduce -> 1x7 -> 7x1
        branch7x7dbl: 1x1 reduce -> 7x1 -> 1x7 -> 7x1 -> 1x7
        branch_pool:  3x3 average pool, stride 1 (padding counted) -> 1x1 projection

    out_channels = ch1x1 + ch7x7 + ch7x7dbl + pool_proj; the spatial size is unchanged.
    """

    def __init__(self, in_channels, ch1x1, ch7x7red, ch7x7, ch7x7dbl, pool_proj):
        super().__init__()
        c7 = ch7x7red
        self.out_channels = ch1x1 + ch7x7 + ch7x7dbl + pool_proj
        self.branch1x1 = conv_bn(in_channels, ch1x1, 1)
        self.branch7x7_1 = conv_bn(in_channels, c7, 1)
        self.branch7x7_2 = conv_bn(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv_bn(c7, ch7x7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv_bn(in_channels, c7, 1)
        self.branch7x7dbl_2 = conv_bn(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv_bn(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv_bn(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv_bn(c7, ch7x7dbl, (1, 7), padding=(0, 3))
        self.branch_pool = conv_bn(in_channels, pool_proj, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return F.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8.

        branch3x3:   1x1 reduce -> 3x3, stride 2
        branch7x7x3: 1x1 reduce -> 1x7 -> 7x1 -> 3x3, stride 2
        branch_pool: 3x3 max pool, stride 2 (the input's channels pass through)

    out_channels = ch3x3 + ch7x7x3 + in_channels; H -> (H - 3) // 2 + 1.
    """

    def __init__(self, in_channels, ch3x3red, ch3x3, ch7x7x3red, ch7x7x3):
        super().__init__()
        c7 = ch7x7x3red
        self.out_channels = ch3x3 + ch7x7x3 + in_channels
        self.branch3x3_1 = conv_bn(in_channels, ch3x3red, 1)
        self.branch3x3_2 = conv_bn(ch3x3red, ch3x3, 3, stride=2)
        self.branch7x7x3_1 = conv_bn(in_channels, c7, 1)
        self.branch7x7x3_2 = conv_bn(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv_bn(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv_bn(c7, ch7x7x3, 3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, 3, stride=2)
        return F.cat([branch3x3, branch7x7x3, branch_pool], dim=1)


class InceptionE(nn.Module):
    """The 8x8 block with expanded filter banks: each 3x3 ends in a 1x3 and a 3x1 side by side.

        branch1x1:    1x1
        branch3x3:    1x1 reduce -> [1x3, 3x1]
        branch3x3dbl: 1x1 reduce -> 3x3 -> [1x3, 3x1]
        branch_pool:  3x3 average pool, stride 1 (padding counted) -> 1x1 projection

    out_channels = ch1x1 + 2 ch3x3 + 2 ch3x3dbl + pool_proj; the spatial size is unchanged.
    """

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch3x3dblred, ch3x3dbl, pool_proj):
        super().__init__()
        self.out_channels = ch1x1 + 2 * ch3x3 + 2 * ch3x3dbl + pool_proj
        self.branch1x1 = conv_bn(in_channels, ch1x1, 1)
        self.branch3x3_1 = conv_bn(in_channels, ch3x3red, 1)
        self.branch3x3_2a = conv_bn(ch3x3red, ch3x3, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv_bn(ch3x3red, ch3x3, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv_bn(in_channels, ch3x3dblred, 1)
        self.branch3x3dbl_2 = conv_bn(ch3x3dblred, ch3x3dbl, 3, padding=1)
        self.branch3x3dbl_3a = conv_bn(ch3x3dbl, ch3x3dbl, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv_bn(ch3x3dbl, ch3x3dbl, (3, 1), padding=(1, 0))
        self.branch_pool = conv_bn(in_channels, pool_proj, 1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = F.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], dim=1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = F.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], dim=1
        )
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return F.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], dim=1)


class InceptionAux(nn.Module):
    """The auxiliary classifier on the 17x17 grid (with BatchNorm, which the paper found acts as
    a regulariser): pool to 5x5 -> 1x1 conv (128) -> 5x5 conv (768) -> average -> FC.

    pool: 'avg5x5s3' (torchvision, the paper: 17x17 -> 5x5) or 'adaptive5x5' (any grid; the
    small-image stem's 7x7 or 6x6).
    """

    def __init__(self, in_channels, num_classes, ch_reduce=128, ch_conv=768, pool="avg5x5s3"):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3) if pool == "avg5x5s3" else nn.AdaptiveAvgPool2d(5)
        self.conv0 = conv_bn(in_channels, ch_reduce, 1)
        self.conv1 = conv_bn(ch_reduce, ch_conv, 5)
        self.fc = nn.Linear(ch_conv, num_classes)

    def forward(self, x):
        if isinstance(self.pool, nn.AvgPool2d) and min(x.shape[2:]) < 17:
            raise ValueError(
                f"InceptionAux: the 5x5/3 average pool needs a feature map of at least 17x17 "
                f"(299x299 images); got {x.shape[2]}x{x.shape[3]}. Use aux_pool='adaptive5x5' "
                f"for smaller inputs"
            )
        # N x 768 x 17 x 17
        x = self.pool(x)
        # N x 768 x 5 x 5
        x = self.conv0(x)
        # N x 128 x 5 x 5
        x = self.conv1(x)
        # N x 768 x 1 x 1
        x = F.adaptive_avg_pool2d(x, 1)
        # N x 768 x 1 x 1
        x = F.flatten(x, 1)
        # N x 768
        return self.fc(x)  # N x num_classes


BLOCKS = {"A": InceptionA, "B": InceptionB, "C": InceptionC, "D": InceptionD, "E": InceptionE}


@dataclass(frozen=True)
class InceptionV3Config:
    """The options of the family.

    num_classes, in_channels: the classifier's outputs and the image's channels.
    aux_logits:      build the auxiliary head on Mixed_6e, run in training mode only.
    dropout:         before the classifier (torchvision 0.5).
    width:           multiplies every channel count of the stem, blocks and aux head.
    stem:            'imagenet' (the paper's, 299 -> 35; needs at least 75x75) or 'small' (its
                     convolutions at stride 1 without the first pool: 32 -> 15, 28 -> 13).
    aux_pool:        'avg5x5s3' (torchvision) or 'adaptive5x5' (any input size).
    transform_input: convert inputs normalised with ImageNet statistics to the [-1, 1] range
                     torchvision's pretrained weights expect (as torchvision's option).
    init:            'torchvision' (truncated normal, std 0.1; 0.01 for the aux head's 5x5
                     conv, 0.001 for its FC) or 'default' (PyTorch's layer defaults).
    """

    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = True
    dropout: float = 0.5
    width: float = 1.0
    stem: str = "imagenet"
    aux_pool: str = "avg5x5s3"
    transform_input: bool = False
    init: str = "torchvision"

    def __post_init__(self):
        choices = {
            "stem": tuple(STEM),
            "aux_pool": ("avg5x5s3", "adaptive5x5"),
            "init": ("torchvision", "default"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"Inception3: {name} must be one of {allowed}; got {getattr(self, name)!r}"
                )
        for name in ("num_classes", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Inception3: {name} must be a positive int; got {value!r}")
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ValueError(f"Inception3: width must be a number > 0; got {self.width!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout <= 1):
            raise ValueError(f"Inception3: dropout must be in [0, 1]; got {self.dropout!r}")
        if self.transform_input and self.in_channels != 3:
            raise ValueError("Inception3: transform_input needs in_channels=3 (RGB)")

    def channels(self, count: int) -> int:
        """A channel count of the paper scaled by ``width`` (at least 1)."""
        return max(1, int(round(count * self.width)))


class InceptionV3Outputs(NamedTuple):
    """Training-mode outputs with the aux head (torchvision's ``InceptionOutputs``)."""

    logits: Tensor
    aux_logits: Tensor


class Inception3(nn.Module):
    """Inception-v3; see ``InceptionV3Config`` for the options.

    In training mode with the aux head, ``model(x)`` returns ``InceptionV3Outputs``; otherwise
    (eval mode, or no aux head) the logits only, and the aux head is not computed.
    """

    def __init__(self, config: InceptionV3Config | None = None, **options):
        super().__init__()
        config = replace(config or InceptionV3Config(), **options)
        self.config = config
        c = config.channels

        # The paper's table 1, a row per layer: the stem, then the blocks with their branch
        # widths; each block reads the channels the one before it leaves (``out_channels``).
        stem = STEM[config.stem]
        self.Conv2d_1a_3x3 = conv_bn(config.in_channels, c(32), *stem["1a"])
        self.Conv2d_2a_3x3 = conv_bn(c(32), c(32), *stem["2a"])
        self.Conv2d_2b_3x3 = conv_bn(c(32), c(64), *stem["2b"])
        self.maxpool1 = nn.MaxPool2d(3, stride=2) if config.stem == "imagenet" else None
        self.Conv2d_3b_1x1 = conv_bn(c(64), c(80), *stem["3b"])
        self.Conv2d_4a_3x3 = conv_bn(c(80), c(192), *stem["4a"])
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        # 35 x 35
        self.Mixed_5b = InceptionA(c(192), c(64), c(48), c(64), c(64), c(96), pool_proj=c(32))
        self.Mixed_5c = InceptionA(
            self.Mixed_5b.out_channels, c(64), c(48), c(64), c(64), c(96), pool_proj=c(64)
        )
        self.Mixed_5d = InceptionA(
            self.Mixed_5c.out_channels, c(64), c(48), c(64), c(64), c(96), pool_proj=c(64)
        )
        # 35 x 35 -> 17 x 17
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_channels, c(384), c(64), c(96))
        # 17 x 17
        self.Mixed_6b = InceptionC(
            self.Mixed_6a.out_channels, c(192), c(128), c(192), c(192), pool_proj=c(192)
        )
        self.Mixed_6c = InceptionC(
            self.Mixed_6b.out_channels, c(192), c(160), c(192), c(192), pool_proj=c(192)
        )
        self.Mixed_6d = InceptionC(
            self.Mixed_6c.out_channels, c(192), c(160), c(192), c(192), pool_proj=c(192)
        )
        self.Mixed_6e = InceptionC(
            self.Mixed_6d.out_channels, c(192), c(192), c(192), c(192), pool_proj=c(192)
        )
        in_channels = self.Mixed_6e.out_channels
        self.AuxLogits = (
            InceptionAux(in_channels, config.num_classes, c(128), c(768), config.aux_pool)
            if config.aux_logits
            else None
        )
        # 17 x 17 -> 8 x 8
        self.Mixed_7a = InceptionD(in_channels, c(192), c(320), c(192), c(192))
        # 8 x 8
        self.Mixed_7b = InceptionE(
            self.Mixed_7a.out_channels, c(320), c(384), c(384), c(448), c(384), pool_proj=c(192)
        )
        self.Mixed_7c = InceptionE(
            self.Mixed_7b.out_channels, c(320), c(384), c(384), c(448), c(384), pool_proj=c(192)
        )
        in_channels = self.Mixed_7c.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_channels, config.num_classes)
        if config.init == "torchvision":
            self._init_torchvision()

    def _init_torchvision(self):
        """torchvision's initialisation: conv and linear weights from a normal truncated to
        [-2, 2] with std 0.1 (the aux head's 5x5 conv 0.01, its FC 0.001); BatchNorm γ = 1,
        β = 0; the FC biases keep their defaults."""
        std = {}
        if self.AuxLogits is not None:
            std = {id(self.AuxLogits.conv1.conv): 0.01, id(self.AuxLogits.fc): 0.001}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, 0.0, std.get(id(module), 0.1), -2.0, 2.0)

    def forward(self, x):
        # Shapes for the paper's network (the 'imagenet' stem, width 1) on 299x299 images.
        x = as_tensor(x)
        smallest = 75 if self.config.stem == "imagenet" else 15
        check_image_batch("Inception3", x, self.config.in_channels, self.config.stem, smallest, 299)
        if self.config.transform_input:
            x = transform_input(x)
        # N x 3 x 299 x 299
        x = self.Conv2d_1a_3x3(x)
        # N x 32 x 149 x 149
        x = self.Conv2d_2a_3x3(x)
        # N x 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)
        # N x 64 x 147 x 147
        if self.maxpool1 is not None:
            x = self.maxpool1(x)
        # N x 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)
        # N x 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)
        # N x 192 x 71 x 71
        x = self.maxpool2(x)
        # N x 192 x 35 x 35
        x = self.Mixed_5b(x)
        # N x 256 x 35 x 35
        x = self.Mixed_5c(x)
        # N x 288 x 35 x 35
        x = self.Mixed_5d(x)
        # N x 288 x 35 x 35
        x = self.Mixed_6a(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6b(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6c(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6d(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6e(x)
        # N x 768 x 17 x 17
        with_aux = self.training and self.AuxLogits is not None
        aux = self.AuxLogits(x) if with_aux else None
        x = self.Mixed_7a(x)
        # N x 1280 x 8 x 8
        x = self.Mixed_7b(x)
        # N x 2048 x 8 x 8
        x = self.Mixed_7c(x)
        # N x 2048 x 8 x 8
        x = self.avgpool(x)
        # N x 2048 x 1 x 1
        x = self.dropout(x)
        x = F.flatten(x, 1)
        # N x 2048
        logits = self.fc(x)
        # N x 1000 (num_classes)
        return InceptionV3Outputs(logits, aux) if with_aux else logits


def inception_v3_loss(outputs, target, aux_weight: float = 0.3, label_smoothing: float = 0.0):
    """main + aux_weight * aux cross-entropies when the model returned ``InceptionV3Outputs``
    (torchvision's recipe weights the aux head 0.4; tinynet's trainer passes its
    ``aux_weight``), the plain cross-entropy of the logits otherwise."""
    if isinstance(outputs, InceptionV3Outputs):
        main = F.cross_entropy(outputs.logits, target, label_smoothing=label_smoothing)
        aux = F.cross_entropy(outputs.aux_logits, target, label_smoothing=label_smoothing)
        return main + aux * aux_weight
    return F.cross_entropy(outputs, target, label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------- presets
SMALL_IMAGES = InceptionV3Config(
    num_classes=10, stem="small", aux_pool="adaptive5x5", width=0.25, init="default"
)


def inception_v3(**options) -> Inception3:
    """torchvision's ``inception_v3``: same state_dict keys and shapes, so its ImageNet weights
    load unchanged (pass transform_input=True for those weights, as torchvision does);
    23,834,568 parameters without the aux head, 27,161,264 with it."""
    return Inception3(InceptionV3Config(), **options)


def inception_v3_small(**options) -> Inception3:
    """A CPU-sized Inception-v3 for 28x28 and 32x32 images: the small-image stem, the aux head
    pooled adaptively, width 0.25, PyTorch's default initialisation, 10 classes."""
    return Inception3(SMALL_IMAGES, **options)
