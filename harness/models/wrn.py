"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016), as in the CIFAR-100 distillation benchmark
(Tian et al. 2020, CRD; RepDistiller's `models/wrn.py`): WRN-d-k with depth d = 6n+4 and width k.

Stem: one 3x3 conv to 16 channels (no BN, no ReLU: the blocks are pre-activation). Three groups of n
pre-activation basic blocks (BN-ReLU-3x3 conv-BN-ReLU-3x3 conv, plus the shortcut) with 16k, 32k, 64k
channels at 32x32, 16x16, 8x8; the first block of groups 2 and 3 has stride 2. Where a block changes
the shape its shortcut is a 1x1 conv (no BN) of the block's activated input; elsewhere it is the raw
input. No dropout. A final BN-ReLU precedes the global average pool and the fc.

Features (stages): the output of each group; the last stage also holds the final BN-ReLU, so the
last feature (64k, 8, 8) is the normalised, rectified map (the Grad-CAM layer) and
logits = fc(avgpool(it)). The first two features are the raw residual sums (pre-activation), like
DenseNet's. For k = 2: (32, 32, 32), (64, 16, 16), (128, 8, 8). WRN-16-2 has 0.70 M parameters,
WRN-40-2 2.26 M (100 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from . import StagedNet


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        # The BN output is a fresh tensor, so the in-place ReLU never overwrites the block input.
        self.preact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.projection = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.preact(x)
        out = self.body(a)  # a fresh tensor: the in-place add leaves `x` and `a` alone
        out += x if self.projection is None else self.projection(a)
        return out


class WideResNet(StagedNet):
    def __init__(self, depth: int, width: int, num_classes: int = 10):
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n, widths = (depth - 4) // 6, [16 * width, 32 * width, 64 * width]
        stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        stages, cin = [], 16
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [PreActBlock(cin if j == 0 else w, w, 2 if i > 0 and j == 0 else 1)
                                       for j in range(n)]
            if i == len(widths) - 1:
                layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            cin = w
        super().__init__(stem, stages, widths, [1, 2, 4], num_classes)


def wrn_16_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn_40_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(40, 2, num_classes)
