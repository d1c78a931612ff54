"""A torchvision-style ResNet, written out here (torchvision is not a dependency).

The layout copies ``torchvision.models.resnet`` so that code written for it
(``attach_exits(model, after=["layer1", "layer2"])``) works unchanged: the
top-level children are ``conv1, bn1, relu, maxpool, layer1..layerN, avgpool,
fc`` and ``forward`` runs them in that order with a flatten before ``fc``.

Two additions for small images: ``small_stem=True`` swaps the 7x7/stride-2
stem and max-pool for one 3x3/stride-1 conv (the CIFAR/MNIST variant), and
``widths``/``layers`` may have fewer than four entries. ``upsample=S``
adds a first child that resizes the input to ``S x S`` (bilinear), so a
model fed 28x28 MNIST computes at 64x64: real CPU cost per request that
dominates the serving path's own (the ``mnist64_resnet`` serving model).
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with torchvision's module names. Input ``[B, C, H, W]`` -> logits ``[B, classes]``."""

    def __init__(self, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes: int = 1000,
                 in_channels: int = 3, small_stem: bool = False, upsample: int | None = None):
        super().__init__()
        assert len(layers) == len(widths) and len(layers) >= 1
        stem = widths[0]
        # registration order = torchvision's = execution order (the exit shim relies on it)
        self.upsample = None
        if upsample:
            self.upsample = nn.Upsample(size=(upsample, upsample), mode="bilinear", align_corners=False)
        if small_stem:
            self.conv1 = conv3x3(in_channels, stem)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = stem
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = [BasicBlock(cin, w, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """torchvision's ``resnet18`` layout (untrained)."""
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)


def mnist_resnet(num_classes: int = 10) -> ResNet:
    """The small MNIST CNN: 3 stages (28x28x16, 14x14x32, 7x7x64), 1/2/2 blocks.

    Later stages are deeper so that an exit after ``layer1`` skips ~3/4 of the
    FLOPs, the usual shape of a ResNet where most compute is past stage 1.
    """
    return ResNet((1, 2, 2), (16, 32, 64), num_classes, in_channels=1, small_stem=True)


def mnist64_resnet(num_classes: int = 10) -> ResNet:
    """The serving model: MNIST upscaled to 64x64 inside the model, 3 stages (64x64x16, 32x32x48, 16x16x128).

    About 0.44 GFLOPs per full pass; an exit after ``layer1`` costs ~9% of it, after ``layer2`` ~42%.
    Clients still send 28x28 images.
    """
    return ResNet((1, 2, 2), (16, 48, 128), num_classes, in_channels=1, small_stem=True, upsample=64)


def digits_resnet(num_classes: int = 10) -> ResNet:
    """A tiny variant for scikit-learn's 8x8 digits (fast tests)."""
    return ResNet((1, 1, 1), (8, 16, 32), num_classes, in_channels=1, small_stem=True)
