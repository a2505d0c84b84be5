"""VGG with batch norm, CIFAR variants: VGG19-BN, and VGG8 / VGG13 of the distillation benchmark.

Sixteen 3x3 conv-BN-ReLU layers in groups of 64x2, 128x2, 256x4, 512x4, 512x4, then global average
pooling and one linear layer (512 -> classes); no dropout, no hidden fully connected layers.

Choice: the ImageNet net max-pools after all five groups, which on a 32x32 input would leave the last
group at 2x2. Here the fifth max-pool is dropped (and the one between the two 512 groups too), so both
512 groups run at 4x4 and the Grad-CAM layer is 4x4 rather than a coarse 2x2. Stages, and hence
features, are the conv outputs at each resolution before any pooling:
(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4) - the last one is the output of both 512 groups,
and logits = fc(avgpool(it)). About 20.0 M parameters.

`vgg8` / `vgg13` are the CIFAR-100 distillation benchmark's (Tian et al. 2020, CRD; RepDistiller's
`models/vgg.py`, `vgg8_bn` / `vgg13_bn`): conv groups 64, 128, 256, 512, 512 of one (vgg8) or two
(vgg13) layers each, max-pools after the first three groups only, so on a 32x32 input the same four
stages as above: (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4) (the last holding both 512
groups). As in the reference their convs keep a bias before the BN (redundant, but part of the
parameter count and of the reference weights' layout): 3.97 M and 9.46 M parameters for 100 classes.
"""

from __future__ import annotations

from torch import nn

from . import StagedNet

# Conv widths of each stage (one stage per resolution; a 2x2 max-pool starts every stage but the first).
STAGES = [[64] * 2, [128] * 2, [256] * 4, [512] * 8]
STAGES_VGG8 = [[64], [128], [256], [512] * 2]
STAGES_VGG13 = [[64] * 2, [128] * 2, [256] * 2, [512] * 4]


class VGG(StagedNet):
    def __init__(self, stages: list[list[int]], num_classes: int = 10, conv_bias: bool = False):
        modules, cin = [], 3
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                cin = w
            modules.append(nn.Sequential(*layers))
        super().__init__(nn.Identity(), modules, [s[-1] for s in stages],
                         [2**i for i in range(len(stages))], num_classes)


def vgg19_bn(num_classes: int = 10) -> VGG:
    return VGG(STAGES, num_classes)


def vgg8(num_classes: int = 10) -> VGG:
    return VGG(STAGES_VGG8, num_classes, conv_bias=True)


def vgg13(num_classes: int = 10) -> VGG:
    return VGG(STAGES_VGG13, num_classes, conv_bias=True)
