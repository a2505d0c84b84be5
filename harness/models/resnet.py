"""CIFAR ResNets of He et al. 2016 (sec. 4.2): depth 6n+2, three groups of n basic blocks.

Stem: 3x3 conv to 16 channels + BN + ReLU. Groups of 16, 32, 64 channels at 32x32, 16x16, 8x8; the first
block of groups 2 and 3 has stride 2 and an option-A shortcut (parameter-free: stride-2 subsampling and
zero-padded channels). Features: the output of each group, (16, 32, 32), (32, 16, 16), (64, 8, 8);
logits = fc(avgpool(last group output)). ResNet20 has 0.27 M parameters, ResNet110 1.73 M.

`resnet8x4` / `resnet32x4`: the 4x-wide variants of the CIFAR-100 distillation benchmark (Tian et al.
2020, CRD; RepDistiller's `models/resnet.py`): a 3x3 stem to 32 channels, groups of 64, 128, 256
channels (1 and 5 blocks each), and option-B shortcuts (1x1 conv + BN) wherever the shape changes,
including the first block of group 1 (32 -> 64 channels at stride 1), as in the reference.
Features (64, 32, 32), (128, 16, 16), (256, 8, 8); 1.23 M and 7.43 M parameters for 100 classes.
(RepDistiller's own resnet20..110 also use option B, hence its slightly larger counts for them:
0.28 M / 0.86 M / 1.74 M at 100 classes against 0.28 M / 0.86 M / 1.73 M here.)
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


def shortcut_b(cin: int, cout: int, stride: int) -> nn.Module:
    """Option B: a 1x1 projection (strided) with BN."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str = "A"):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        if stride == 1 and cin == cout:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ShortcutA(cin, cout) if shortcut == "A" else shortcut_b(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `out` is a fresh tensor, so the in-place add and ReLU never touch the block input `x`.
        out = self.body(x)
        out += self.shortcut(x)
        return out.relu_()


class CifarResNet(StagedNet):
    def __init__(self, depth: int, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 stem_width: int = 16, shortcut: str = "A"):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n, widths = (depth - 2) // 6, list(widths)
        stem = nn.Sequential(*conv_bn(3, stem_width), nn.ReLU(inplace=True))
        stages, cin = [], stem_width
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if i > 0 and j == 0 else 1, shortcut)
                      for j in range(n)]
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


def resnet8x4(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(8, num_classes, widths=(64, 128, 256), stem_width=32, shortcut="B")


def resnet32x4(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes, widths=(64, 128, 256), stem_width=32, shortcut="B")
