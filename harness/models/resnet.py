"""CIFAR ResNets of He et al. 2016 (sec. 4.2): depth 6n+2, three groups of n basic blocks.

Stem: 3x3 conv to 16 channels + BN + ReLU. Groups of 16, 32, 64 channels at 32x32, 16x16, 8x8; the first
block of groups 2 and 3 has stride 2 and an option-A shortcut (parameter-free: stride-2 subsampling and
zero-padded channels). Features: the output of each group, (16, 32, 32), (32, 16, 16), (64, 8, 8);
logits = fc(avgpool(last group output)). ResNet20 has 0.27 M parameters, ResNet110 1.73 M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import StagedNet


def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class ShortcutA(nn.Module):
    """Option A: keep every other pixel, pad the new channels with zeros (half on each side)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = ((cout - cin) // 2, cout - cin - (cout - cin) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        self.shortcut = ShortcutA(cin, cout) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `out` is a fresh tensor, so the in-place add and ReLU never touch the block input `x`.
        out = self.body(x)
        out += self.shortcut(x)
        return out.relu_()


class CifarResNet(StagedNet):
    def __init__(self, depth: int, num_classes: int = 10):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n, widths = (depth - 2) // 6, [16, 32, 64]
        stem = nn.Sequential(*conv_bn(3, 16), nn.ReLU(inplace=True))
        stages, cin = [], 16
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if i > 0 and j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        super().__init__(stem, stages, widths, [1, 2, 4], num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(110, num_classes)
