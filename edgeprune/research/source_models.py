"""Small source networks for 32x32 Fashion-MNIST (the benchmark's and the demo's models).

Both are built from torchvision's own block classes, so block discovery recognises them as
known types: ``fmnist_resnet`` (CIFAR-style ResNet, BasicBlocks, widths 16/32/64, 4 blocks per
stage: 10 removable) and ``fmnist_mobilenetv2`` (torchvision MobileNetV2 with a 32-px setting,
expansion 4, most blocks at 8x8 and 4x4, and a 96 -> 256 last conv, sized to train in minutes on
one CPU thread: 10 removable inverted residuals). BatchNorm throughout: the shift experiments depend on it.
Trained weights live outside git (``pretrained_path``), written by ``tools/train_source.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..compat import import_torchvision
from ..models.zoo import ZooEntry, register_entry

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


# (expansion t, channels c, repeats n, stride s) after the stride-2 stem: 16x16 -> 8x8 -> 4x4.
# Tuned for a 1-thread CPU training budget (about 0.2 s per batch-128 step instead of 0.43 s for
# torchvision's t = 6 setting with its 96 -> 1280 last conv): expansion 4, only the stem and the
# t = 1 block at 16x16 (torchvision's 32 -> 16, not removable, as in mobilenet_v2), and a 96 -> 256
# last conv. Removable inverted residuals: 2 (24) + 3 (32) + 3 (64) + 2 (96) = 10.
FMNIST_MOBILENETV2_SETTING = [[1, 16, 1, 1], [4, 24, 3, 2], [4, 32, 4, 1], [4, 64, 4, 2], [4, 96, 3, 1]]
FMNIST_MOBILENETV2_LAST = 256


def build_fmnist_mobilenetv2() -> nn.Module:
    """torchvision ``MobileNetV2`` (its forward, stem, ``InvertedResidual`` blocks) with a smaller
    last conv: torchvision derives it (1280 channels) itself, so it is replaced after construction
    and re-initialised the way torchvision initialises its layers."""
    tv = import_torchvision()
    setting = FMNIST_MOBILENETV2_SETTING
    model = tv.models.MobileNetV2(num_classes=10, width_mult=1.0, inverted_residual_setting=setting)
    last = FMNIST_MOBILENETV2_LAST
    model.features[-1] = tv.ops.misc.Conv2dNormActivation(setting[-1][1], last, kernel_size=1,
                                                          norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6)
    model.classifier[1] = nn.Linear(last, 10)
    model.last_channel = last
    for module in (model.features[-1], model.classifier):
        for m in module.modules():  # torchvision MobileNetV2's own initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    return model


# Training epochs of tools/train_source.py per model (each <= ~10 min at 1 thread on a 2-core CPU).
DEFAULT_EPOCHS = {"fmnist_resnet": 6, "fmnist_mobilenetv2": 5}


for _entry in (
    ZooEntry("fmnist_resnet", "local", "fmnist_resnet", 32, FMNIST_MEAN, FMNIST_STD, "layer3", "fc", "resnet",
             num_classes=10, crop_pct=1.0, notes="Fashion-MNIST 32px ResNet, 10 removable blocks",
             builder=build_fmnist_resnet, weights_file=lambda: pretrained_path("fmnist_resnet")),
    ZooEntry("fmnist_mobilenetv2", "local", "fmnist_mobilenetv2", 32, FMNIST_MEAN, FMNIST_STD, "features", "classifier",
             "features", num_classes=10, crop_pct=1.0, notes="Fashion-MNIST 32px MobileNetV2, 10 removable blocks",
             builder=build_fmnist_mobilenetv2, weights_file=lambda: pretrained_path("fmnist_mobilenetv2")),
):
    register_entry(_entry)
