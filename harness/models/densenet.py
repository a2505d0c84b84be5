"""DenseNet-BC-121 for CIFAR (Huang et al. 2017; the common 32x32 adaptation).

Growth k = 32, dense blocks of 6, 12, 24, 16 bottleneck layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv
to k, concatenated to the input), compression 0.5 in the transitions (BN-ReLU-1x1 conv-2x2 avg pool).
Stem: one 3x3 conv to 2k = 64 channels, no max-pool, so the blocks run at 32, 16, 8, 4 pixels.
About 7.0 M parameters.

Features (stages): stage i = [transition from block i-1, for i > 0] + dense block i, so feature i is the
raw concatenated output of dense block i, before the next transition (its BN-ReLU-conv and pooling):
(256, 32, 32), (512, 16, 16), (1024, 8, 8). The last stage also holds the final BN-ReLU, so the last
feature (1024, 4, 4) is the normalised, rectified map and logits = fc(avgpool(it)).
The first three features are thus pre-activation (unnormalised) like the block outputs of any
pre-activation net; the ResNets' features are post-ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from . import StagedNet


def bn_relu_conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    # The BN output is a fresh tensor, so the in-place ReLU never overwrites a stage output.
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(*bn_relu_conv(cin, 4 * growth, 1), *bn_relu_conv(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseNet(StagedNet):
    def __init__(self, blocks: tuple[int, ...] = (6, 12, 24, 16), growth: int = 32,
                 reduction: float = 0.5, num_classes: int = 10):
        c = 2 * growth
        stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        stages, channels = [], []
        for i, n in enumerate(blocks):
            layers: list[nn.Module] = []
            if i > 0:  # transition from the previous block
                cout = int(c * reduction)
                layers += [*bn_relu_conv(c, cout, 1), nn.AvgPool2d(2)]
                c = cout
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i == len(blocks) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            channels.append(c)
        super().__init__(stem, stages, channels, [2**i for i in range(len(blocks))], num_classes)


def densenet121(num_classes: int = 10) -> DenseNet:
    return DenseNet((6, 12, 24, 16), growth=32, reduction=0.5, num_classes=num_classes)
