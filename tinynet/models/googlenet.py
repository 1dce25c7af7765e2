"""GoogLeNet (Inception v1, Szegedy et al., "Going Deeper with Convolutions", 2014) built from
explicit Inception blocks, with the variants that followed it.

The nine blocks are the paper's table, one constructor call per row:

    name          in   1x1  3x3red  3x3  5x5red  5x5  pool proj
    inception3a  192    64     96   128      16   32     32
    ...

Module and parameter names follow torchvision's ``googlenet`` (``conv1``, ``inception3a``,
``branch1``..``branch4``, ``aux1``/``aux2``, ``fc``), so a torchvision state dict loads into
``googlenet_torchvision()`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from tinynet import functional as F
from tinynet import nn
from tinynet.tensor import Tensor, as_tensor

# The paper's table: (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection).
INCEPTION_TABLE = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)


@dataclass(frozen=True)
class GoogLeNetConfig:
    """Every choice that distinguishes the paper's network from its variants.

    num_classes, in_channels: the classifier's outputs and the image's channels.
    aux_logits:      build the two auxiliary heads (on 4a and 4d), used in training only.
    dropout, dropout_aux: dropout before the main classifier (paper 0.4) and in the aux heads (0.7).
    batch_norm:      conv -> BatchNorm(eps=0.001) -> ReLU with bias-free convs (Inception-BN,
                     torchvision) instead of conv(+bias) -> ReLU.
    lrn:             the paper's two LocalResponseNorm(5, 1e-4, 0.75) layers in the stem.
    branch3:         the third branch: '5x5' (paper), '3x3' (torchvision's published weights), or
                     'double3x3' (Inception-v2: the 5x5 factorised into two 3x3).
    width:           multiplies every channel count (e.g. 0.25 for CPU-sized experiments).
    stem:            'imagenet' (7x7/2 conv, 3x3/2 pool: 224 -> 56) or 'small' (3x3/1 convs,
                     one 3x3/2 pool: 32 -> 16, 28 -> 14), so that small images keep resolution
                     through the three downsamplings that follow.
    aux_pool:        the aux heads' pooling: 'avg5x5s3' (paper: 14x14 -> 4x4) or 'adaptive4x4'
                     (torchvision; works at any input size).
    maxpool4_kernel: the pool between 4e and 5a: 3 (paper) or 2 (torchvision).
    transform_input: convert inputs normalised with ImageNet statistics to the [-1, 1] range
                     torchvision's pretrained weights expect (as torchvision's option).
    init:            'torchvision' (truncated normal, std 0.01) or 'default' (PyTorch's layer
                     defaults: kaiming uniform).
    """

    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = True
    dropout: float = 0.4
    dropout_aux: float = 0.7
    batch_norm: bool = False
    lrn: bool = True
    branch3: str = "5x5"
    width: float = 1.0
    stem: str = "imagenet"
    aux_pool: str = "avg5x5s3"
    maxpool4_kernel: int = 3
    transform_input: bool = False
    init: str = "torchvision"

    def __post_init__(self):
        choices = {
            "branch3": ("5x5", "3x3", "double3x3"),
            "stem": ("imagenet", "small"),
            "aux_pool": ("avg5x5s3", "adaptive4x4"),
            "init": ("torchvision", "default"),
            "maxpool4_kernel": (2, 3),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"GoogLeNet: {name} must be one of {allowed}; got {getattr(self, name)!r}"
                )
        for name in ("num_classes", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GoogLeNet: {name} must be a positive int; got {value!r}")
        if not self.width > 0:
            raise ValueError(f"GoogLeNet: width must be > 0; got {self.width!r}")
        if self.transform_input and self.in_channels != 3:
            raise ValueError("GoogLeNet: transform_input needs in_channels=3 (RGB)")

    def channels(self, count: int) -> int:
        """A channel count of the paper scaled by ``width`` (at least 1)."""
        return max(1, int(round(count * self.width)))


def transform_input(x):
    """Images normalised with ImageNet's mean and std, renormalised to (x - 0.5) / 0.5 per
    channel: the range torchvision's pretrained GoogLeNet and Inception-v3 were trained on
    (their ``transform_input`` option)."""
    mean = np.array([0.485, 0.456, 0.406], dtype=x.dtype).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=x.dtype).reshape(1, 3, 1, 1)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def check_image_batch(network: str, x, in_channels: int, stem: str, smallest: int, design: int):
    """Refuse what is not a batch of ``in_channels``-channel images at least ``smallest`` pixels on
    a side (what ``stem`` leaves a grid for), naming the network and its design size."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{network}: input must be a batch of images (N, {in_channels}, H, W); got shape "
            f"{tuple(x.shape)}"
        )
    if min(x.shape[2:]) < smallest:
        raise ValueError(
            f"{network}: images of {x.shape[2]}x{x.shape[3]} are too small for the "
            f"'{stem}' stem, which needs at least {smallest}x{smallest} "
            f"({design}x{design} for the paper's 'imagenet' stem, 32x32 or 28x28 for 'small')"
        )


class BasicConv2d(nn.Module):
    """conv -> ReLU, or conv (no bias) -> BatchNorm(eps=0.001) -> ReLU; named ``conv`` and
    ``bn`` as torchvision's helper of the same name."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)


class Inception(nn.Module):
    """Four parallel branches on the same input, concatenated on channels:

        branch1: 1x1
        branch2: 1x1 reduce -> 3x3
        branch3: 1x1 reduce -> 5x5 (or 3x3, or two 3x3)
        branch4: 3x3 max pool, stride 1 -> 1x1 projection

    out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj; the spatial size is unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        batch_norm: bool = False,
        branch3: str = "5x5",
    ):
        super().__init__()
        conv = lambda cin, cout, k, p=0: BasicConv2d(cin, cout, k, padding=p, batch_norm=batch_norm)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = conv(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(conv(in_channels, ch3x3red, 1), conv(ch3x3red, ch3x3, 3, 1))
        if branch3 == "5x5":
            third = (conv(ch5x5red, ch5x5, 5, 2),)
        elif branch3 == "3x3":
            third = (conv(ch5x5red, ch5x5, 3, 1),)
        else:
            third = (conv(ch5x5red, ch5x5, 3, 1), conv(ch5x5, ch5x5, 3, 1))
        self.branch3 = nn.Sequential(conv(in_channels, ch5x5red, 1), *third)
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), conv(in_channels, pool_proj, 1)
        )

    def forward(self, x):
        # N x in_channels x H x W -> each branch N x its channels x H x W
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        # N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W
        return F.cat(branches, dim=1)

    def naive_cost(self, input_shape) -> tuple[int, int]:
        """(multiply-adds per image, parameters) of this block without its 1x1 reductions
        (section 4 of the paper), on an input of ``input_shape`` (C, H, W): branch1's 1x1 as
        built; in branches 2 and 3 the convolution after the reduction takes the full depth C
        (any later one is unchanged); the pool's C channels pass through unprojected. Each
        convolution keeps its bias or BatchNorm. For 128, 192 and 96 filters on 28 x 28 x 256:
            H · W · C · (ch1x1 + 9 · ch3x3 + 25 · ch5x5) = 854M multiply-adds.
        ``tinynet.summary`` reports it beside the block's cost as built."""
        channels, height, width = input_shape
        layers = [(self.branch1, channels)]
        for branch in (self.branch2, self.branch3):
            first, *rest = list(branch)[1:]  # [0] is the 1x1 reduction
            layers += [(first, channels), *((layer, layer.conv.in_channels) for layer in rest)]
        macs = params = 0
        for layer, depth in layers:
            kh, kw = layer.conv.kernel_size
            weights = depth * kh * kw * layer.conv.out_channels
            macs += height * width * weights  # stride 1, padded: the output is H x W
            params += weights + sum(p.size for p in layer.parameters()) - layer.conv.weight.size
        return macs, params


class InceptionAux(nn.Module):
    """An auxiliary classifier: pool to 4x4 -> 1x1 conv (128) -> FC 1024 + ReLU -> dropout
    -> FC num_classes. Its loss, weighted 0.3, adds gradient to the middle of the network."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.7,
        batch_norm: bool = False,
        pool: str = "avg5x5s3",
        width: float = 1.0,
    ):
        super().__init__()
        hidden = max(1, int(round(128 * width)))
        self.pool = nn.AvgPool2d(5, stride=3) if pool == "avg5x5s3" else nn.AdaptiveAvgPool2d(4)
        self.conv = BasicConv2d(in_channels, hidden, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(hidden * 16, max(1, int(round(1024 * width))))
        self.fc2 = nn.Linear(self.fc1.out_features, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # Shapes for the paper's network on 224x224 images.
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        if x.shape[2:] != (4, 4):
            raise ValueError(
                f"InceptionAux: the 5x5/3 average pool needs a 14x14 feature map (224x224 "
                f"images); got {tuple(x.shape[2:])} after pooling. Use aux_pool='adaptive4x4' "
                f"for other input sizes"
            )
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = F.flatten(x, 1)
        # N x 2048
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return self.fc2(x)  # N x num_classes


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs with auxiliary heads (the order of torchvision's namedtuple)."""

    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


class GoogLeNet(nn.Module):
    """GoogLeNet; see ``GoogLeNetConfig`` for the options and the presets below for the
    networks people mean by the name.

    In training mode with aux heads, ``model(x)`` returns ``GoogLeNetOutputs``; otherwise (eval
    mode, or no aux heads) the main logits only, and the aux heads are not computed.
    """

    def __init__(self, config: GoogLeNetConfig | None = None, **options):
        super().__init__()
        config = replace(config or GoogLeNetConfig(), **options)
        self.config = config
        c, bn = config.channels, config.batch_norm
        conv = lambda cin, cout, k, s=1, p=0: BasicConv2d(cin, cout, k, s, p, batch_norm=bn)

        if config.stem == "imagenet":
            self.conv1 = conv(config.in_channels, c(64), 7, 2, 3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        else:
            self.conv1 = conv(config.in_channels, c(64), 3, 1, 1)
            self.maxpool1 = None
        self.lrn1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0) if config.lrn else None
        self.conv2 = conv(c(64), c(64), 1)
        self.conv3 = conv(c(64), c(192), 3, 1, 1)
        self.lrn2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0) if config.lrn else None
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        blocks = {}
        in_channels = c(192)
        for name, *widths in INCEPTION_TABLE:
            block = Inception(
                in_channels, *(c(w) for w in widths), batch_norm=bn, branch3=config.branch3
            )
            blocks[name] = block
            in_channels = block.out_channels
        self.inception3a, self.inception3b = blocks["inception3a"], blocks["inception3b"]
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a, self.inception4b = blocks["inception4a"], blocks["inception4b"]
        self.inception4c, self.inception4d = blocks["inception4c"], blocks["inception4d"]
        self.inception4e = blocks["inception4e"]
        self.maxpool4 = nn.MaxPool2d(config.maxpool4_kernel, stride=2, ceil_mode=True)
        self.inception5a, self.inception5b = blocks["inception5a"], blocks["inception5b"]

        if config.aux_logits:
            aux = lambda block: InceptionAux(
                block.out_channels,
                config.num_classes,
                config.dropout_aux,
                bn,
                config.aux_pool,
                config.width,
            )
            self.aux1 = aux(self.inception4a)
            self.aux2 = aux(self.inception4d)
        else:
            self.aux1 = self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_channels, config.num_classes)
        if config.init == "torchvision":
            self._init_torchvision()

    def _init_torchvision(self):
        """torchvision's GoogLeNet initialisation: conv and linear weights from a normal with
        std 0.01 truncated to [-2, 2]; BatchNorm γ = 1, β = 0; biases keep their defaults."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, 0.0, 0.01, -2.0, 2.0)

    def forward(self, x):
        # Shapes for the paper's network (the 'imagenet' stem, width 1) on 224x224 images.
        x = as_tensor(x)
        smallest = 32 if self.config.stem == "imagenet" else 8
        check_image_batch("GoogLeNet", x, self.config.in_channels, self.config.stem, smallest, 224)
        if self.config.transform_input:
            x = transform_input(x)
        # N x 3 x 224 x 224
        x = self.conv1(x)
        # N x 64 x 112 x 112
        if self.maxpool1 is not None:
            x = self.maxpool1(x)
        # N x 64 x 56 x 56
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv2(x)
        # N x 64 x 56 x 56
        x = self.conv3(x)
        # N x 192 x 56 x 56
        if self.lrn2 is not None:
            x = self.lrn2(x)
        x = self.maxpool2(x)
        # N x 192 x 28 x 28

        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 480 x 28 x 28
        x = self.maxpool3(x)
        # N x 480 x 14 x 14
        x = self.inception4a(x)
        # N x 512 x 14 x 14
        with_aux = self.training and self.aux1 is not None
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4b(x)
        # N x 512 x 14 x 14
        x = self.inception4c(x)
        # N x 512 x 14 x 14
        x = self.inception4d(x)
        # N x 528 x 14 x 14
        aux2 = self.aux2(x) if with_aux else None
        x = self.inception4e(x)
        # N x 832 x 14 x 14
        x = self.maxpool4(x)
        # N x 832 x 7 x 7
        x = self.inception5a(x)
        # N x 832 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7

        x = self.avgpool(x)
        # N x 1024 x 1 x 1
        x = F.flatten(x, 1)
        # N x 1024
        x = self.dropout(x)
        logits = self.fc(x)
        # N x 1000 (num_classes)
        return GoogLeNetOutputs(logits, aux2, aux1) if with_aux else logits


def googlenet_loss(outputs, target, aux_weight: float = 0.3, label_smoothing: float = 0.0):
    """The paper's training loss: main + aux_weight * (aux1 + aux2) cross-entropies when the
    model returned ``GoogLeNetOutputs``, the plain cross-entropy of the logits otherwise."""
    if isinstance(outputs, GoogLeNetOutputs):
        main = F.cross_entropy(outputs.logits, target, label_smoothing=label_smoothing)
        aux = F.cross_entropy(
            outputs.aux_logits1, target, label_smoothing=label_smoothing
        ) + F.cross_entropy(outputs.aux_logits2, target, label_smoothing=label_smoothing)
        return main + aux * aux_weight
    return F.cross_entropy(outputs, target, label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------- presets
PAPER = GoogLeNetConfig()
TORCHVISION = GoogLeNetConfig(
    dropout=0.2,
    batch_norm=True,
    lrn=False,
    branch3="3x3",
    aux_pool="adaptive4x4",
    maxpool4_kernel=2,
)
SMALL = GoogLeNetConfig(
    num_classes=10,
    batch_norm=True,
    lrn=False,
    stem="small",
    aux_pool="adaptive4x4",
    width=0.25,
    init="default",
)


def googlenet_paper(**options) -> GoogLeNet:
    """The network of the paper: 5x5 branches, LRN in the stem, no BatchNorm, aux heads pooled
    5x5/3, dropout 0.4 (6,998,552 parameters for 1000 classes without its aux heads)."""
    return GoogLeNet(PAPER, **options)


def googlenet_torchvision(**options) -> GoogLeNet:
    """torchvision's ``googlenet``: BatchNorm, no LRN, 3x3 in the third branch, adaptive aux
    pooling, 2x2 pool before 5a, dropout 0.2; same state_dict keys and shapes, so its
    ImageNet weights load unchanged (pass transform_input=True for those weights, as
    torchvision does)."""
    return GoogLeNet(TORCHVISION, **options)


def googlenet_small(**options) -> GoogLeNet:
    """A CPU-sized GoogLeNet for 28x28 and 32x32 images: the small stem, BatchNorm (it trains
    from PyTorch's default initialisation; the BN-free network does not), width 0.25, 10
    classes."""
    return GoogLeNet(SMALL, **options)
