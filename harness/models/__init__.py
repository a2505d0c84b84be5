"""The model zoo: CIFAR (32x32) ResNets, VGG19-BN and DenseNet-121, and the CIFAR-100 distillation
benchmark's ResNet8x4/32x4, WRN-16-2/40-2 and VGG8/13 (Tian et al. 2020), all with one feature contract.

    model = build_model("resnet56", num_classes=10)
    logits = model(x)
    logits, feats = model(x, features=True)    # feats: one tensor per stage, shallow -> deep

Every model is a `StagedNet`: ``stem -> stages[0] -> ... -> stages[-1] -> global avg pool -> fc``.
Feature ``i`` is the output of ``stages[i]``; the last one is the Grad-CAM layer, and the logits depend
on it only through ``model.head(f) == model.fc(flatten(model.pool(f)))``. Features are ordinary tensors
of the autograd graph (no hooks), so losses on them train the student and gradients reach the input.

Without a dummy forward, ``model.feature_channels[i]`` is the channel count of feature ``i`` and
``model.feature_strides[i]`` its downsampling factor relative to the input (a 32x32 image gives
``32 // stride`` pixels a side); ``model.feature_shapes(32)`` spells out the ``(C, H, W)`` triples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class StagedNet(nn.Module):
    """Shared skeleton of the zoo: a stem, a list of stages whose outputs are the features, a head.

    Defined here, before the submodules are imported, because each architecture subclasses it.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], channels: Sequence[int],
                 strides: Sequence[int], num_classes: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)
        self.feature_channels: list[int] = list(channels)
        self.feature_strides: list[int] = list(strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_shapes(self, input_size: int = 32) -> list[tuple[int, int, int]]:
        """``(C, H, W)`` of each feature for a square ``input_size`` image."""
        return [(c, input_size // s, input_size // s)
                for c, s in zip(self.feature_channels, self.feature_strides)]

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        """Logits from the last feature map (the Grad-CAM layer): global average pool, then fc."""
        return self.fc(torch.flatten(self.pool(feature), 1))

    def forward_from(self, index: int, feature: torch.Tensor) -> torch.Tensor:
        """Logits from feature ``index`` onwards: the rest of the network, for interventions on a
        stage's output (e.g. a causal mask) without re-running the stages before it."""
        for stage in self.stages[index % len(self.stages) + 1:]:  # index −1: the last stage
            feature = stage(feature)
        return self.head(feature)

    def forward(self, x: torch.Tensor, features: bool = False):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        logits = self.head(x)
        return (logits, feats) if features else logits


from .densenet import densenet121  # noqa: E402  (the submodules need StagedNet above)
from .resnet import resnet8x4, resnet20, resnet32, resnet32x4, resnet56, resnet110  # noqa: E402
from .vgg import vgg8, vgg13, vgg19_bn  # noqa: E402
from .wrn import wrn_16_2, wrn_40_2  # noqa: E402

_REGISTRY: dict[str, Callable[..., StagedNet]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "vgg19_bn": vgg19_bn,
    "densenet121": densenet121,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_2": wrn_16_2,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg13": vgg13,
}
ARCHS: tuple[str, ...] = tuple(_REGISTRY)


def build_model(arch: str, num_classes: int = 10) -> StagedNet:
    """A freshly initialised model by registry name (see ``ARCHS``)."""
    try:
        builder = _REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(ARCHS)}") from None
    return builder(num_classes=num_classes)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["ARCHS", "StagedNet", "build_model", "count_parameters"]
