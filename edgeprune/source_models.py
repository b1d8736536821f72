"""Small source networks for 32x32 Fashion-MNIST (the benchmark's and the demo's models).

Both are built from torchvision's own block classes, so block discovery recognises them as
known types: ``fmnist_resnet`` (CIFAR-style ResNet, BasicBlocks, widths 16/32/64, 4 blocks per
stage: 10 removable) and ``fmnist_mobilenetv2`` (torchvision MobileNetV2 with a 32-px setting:
10 removable inverted residuals). BatchNorm throughout: the shift experiments depend on it.
Trained weights live outside git (``pretrained_path``), written by ``tools/train_source.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .compat import import_torchvision
from .zoo import ZooEntry, register_entry

FMNIST_MEAN = (0.2860,) * 3  # Fashion-MNIST statistics of the unpadded 28x28 images (train and test alike)
FMNIST_STD = (0.3530,) * 3


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune")) / "source_models"


def pretrained_path(name: str) -> Path:
    return cache_dir() / f"{name}.pt"


class FmnistResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-2 stem (16x16 maps keep training fast on a CPU), three
    stages of BasicBlocks, global pool, linear head."""

    def __init__(self, widths=(16, 32, 64), depth=4, num_classes=10):
        super().__init__()
        block = import_torchvision().models.resnet.BasicBlock
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # keeps the torchvision ResNet layout (staging "resnet")
        layers, c_in = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or c_in != w:
                down = nn.Sequential(nn.Conv2d(c_in, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w))
            blocks = [block(c_in, w, stride, down)] + [block(w, w) for _ in range(depth - 1)]
            layers.append(nn.Sequential(*blocks))
            c_in = w
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def build_fmnist_resnet() -> nn.Module:
    return FmnistResNet()


def build_fmnist_mobilenetv2() -> nn.Module:
    tv = import_torchvision()
    # (expansion t, channels c, repeats n, stride s) after a stride-2 stem: 16x16 -> 4x4.
    setting = [[1, 16, 1, 1], [6, 24, 3, 1], [6, 32, 4, 2], [6, 64, 4, 2], [6, 96, 3, 1]]
    return tv.models.MobileNetV2(num_classes=10, width_mult=1.0, inverted_residual_setting=setting)


for _entry in (
    ZooEntry("fmnist_resnet", "local", "fmnist_resnet", 32, FMNIST_MEAN, FMNIST_STD, "layer3", "fc", "resnet",
             num_classes=10, crop_pct=1.0, notes="Fashion-MNIST 32px ResNet, 10 removable blocks",
             builder=build_fmnist_resnet),
    ZooEntry("fmnist_mobilenetv2", "local", "fmnist_mobilenetv2", 32, FMNIST_MEAN, FMNIST_STD, "features", "classifier",
             "features", num_classes=10, crop_pct=1.0, notes="Fashion-MNIST 32px MobileNetV2, 10 removable blocks",
             builder=build_fmnist_mobilenetv2),
):
    register_entry(_entry)
