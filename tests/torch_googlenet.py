"""A PyTorch GoogLeNet for the parity tests, built from a tinynet ``GoogLeNetConfig``.

With ``TORCHVISION`` it has torchvision's ``googlenet`` structure and state_dict names
(torchvision itself cannot be installed beside the pinned torch here), and with the other
configs the paper's variants, so the same weights can be run in both frameworks.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinynet.models.googlenet import INCEPTION_TABLE


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, batch_norm=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(cout, eps=0.001) if batch_norm else None

    def forward(self, x):
        x = self.conv(x)
        return F.relu(self.bn(x) if self.bn is not None else x)


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, config):
        super().__init__()
        conv = lambda a, b, k, p=0: BasicConv2d(a, b, k, padding=p, batch_norm=config.batch_norm)
        self.branch1 = conv(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(conv(cin, ch3x3red, 1), conv(ch3x3red, ch3x3, 3, 1))
        third = {
            "5x5": [conv(ch5x5red, ch5x5, 5, 2)],
            "3x3": [conv(ch5x5red, ch5x5, 3, 1)],
            "double3x3": [conv(ch5x5red, ch5x5, 3, 1), conv(ch5x5, ch5x5, 3, 1)],
        }[config.branch3]
        self.branch3 = nn.Sequential(conv(cin, ch5x5red, 1), *third)
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(cin, pool_proj, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, config):
        super().__init__()
        hidden = config.channels(128)
        self.pool = config.aux_pool
        self.conv = BasicConv2d(cin, hidden, 1, batch_norm=config.batch_norm)
        self.fc1 = nn.Linear(hidden * 16, config.channels(1024))
        self.fc2 = nn.Linear(config.channels(1024), config.num_classes)
        self.p = config.dropout_aux

    def forward(self, x):
        if self.pool == "avg5x5s3":
            x = F.avg_pool2d(x, 5, 3)
        else:
            x = F.adaptive_avg_pool2d(x, (4, 4))
        x = torch.flatten(self.conv(x), 1)
        x = F.relu(self.fc1(x))
        return self.fc2(F.dropout(x, self.p, self.training))


class TorchGoogLeNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = c = config
        conv = lambda a, b, k, s=1, p=0: BasicConv2d(a, b, k, s, p, batch_norm=c.batch_norm)
        ch = c.channels
        if c.stem == "imagenet":
            self.conv1 = conv(c.in_channels, ch(64), 7, 2, 3)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        else:
            self.conv1 = conv(c.in_channels, ch(64), 3, 1, 1)
            self.maxpool1 = None
        self.conv2 = conv(ch(64), ch(64), 1)
        self.conv3 = conv(ch(64), ch(192), 3, 1, 1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin, out_channels = ch(192), {}
        for name, *widths in INCEPTION_TABLE:
            setattr(self, name, Inception(cin, *(ch(w) for w in widths), c))
            cin = out_channels[name] = ch(widths[0]) + ch(widths[2]) + ch(widths[4]) + ch(widths[5])
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
            if name == "inception4e":
                self.maxpool4 = nn.MaxPool2d(c.maxpool4_kernel, 2, ceil_mode=True)
        if c.aux_logits:
            self.aux1 = InceptionAux(out_channels["inception4a"], c)
            self.aux2 = InceptionAux(out_channels["inception4d"], c)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, c.num_classes)

    def forward(self, x):
        c = self.config
        if c.transform_input:
            mean = torch.tensor([0.485, 0.456, 0.406], dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], dtype=x.dtype).view(1, 3, 1, 1)
            x = x * (std / 0.5) + (mean - 0.5) / 0.5
        x = self.conv1(x)
        if self.maxpool1 is not None:
            x = self.maxpool1(x)
        if c.lrn:
            x = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
        x = self.conv3(self.conv2(x))
        if c.lrn:
            x = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
        x = self.maxpool2(x)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.training and c.aux_logits
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = F.dropout(torch.flatten(self.avgpool(x), 1), c.dropout, self.training)
        logits = self.fc(x)
        return (logits, aux2, aux1) if with_aux else logits
