"""`fa`: feature alignment, FitNet-style hints (Romero et al. 2015).

For each (student stage, teacher stage) pair in `pairs` a trainable regressor — 1×1 conv + BN, student channels →
teacher channels — maps the student's feature to the teacher's. Where the spatial sizes differ the
regressed map is average-pooled (larger) or bilinearly resized (smaller) to the teacher's size.
Loss = `weight` (default 100) × MSE(regressed student, teacher), in float32, averaged over pairs
and teachers. The regressors are sub-modules of the method: trained, checkpointed and resumed with
the student, and never part of the student network itself.

`pairs` defaults to one hint, the deepest CIFAR stage (student stage 2 ↔ teacher stage 2, 8×8
for the ResNets and VGG): FitNet's single hint layer, as the common CIFAR re-implementations place
it, and where the causal mask is computed. Add pairs (e.g. `[[0, 0], [1, 1], [2, 2]]`) to align
every stage; each shallow pair costs a regressor pass over a 16×32×32-sized map per step.

With a causal mask (`mask` ≠ "none", see methods/causal_mask.py) the squared error is averaged over
kept positions only (soft masks weight positions).
"""
from __future__ import annotations

from torch import Tensor, nn
import torch.nn.functional as F

from methods.base import Context, Param, Term, register
from methods.causal_mask import DEFAULTS as MASK_DEFAULTS, CausalMask, to_pixels


def regressor(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def match_size(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    if x.shape[-1] < size:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def fa_distance(student: Tensor, teacher: Tensor, weights: Tensor | None = None) -> Tensor:
    """MSE of two (B, C, H, W) maps; with (B, H, W) weights, averaged over weighted positions."""
    if weights is None:
        return F.mse_loss(student.float(), teacher.float())
    sq = (student.float() - teacher.float()).pow(2)
    return (sq.mean(1) * weights).sum() / weights.sum().clamp(min=1e-12)


@register
class FeatureAlignment(Term):
    name = "fa"
    defaults = {"weight": Param(100.0, minimum=0), "pairs": [[2, 2]], **MASK_DEFAULTS}
    uses_teachers = True

    def __init__(self, ctx: Context, **params):
        super().__init__(ctx, **params)
        s_channels = ctx.student.feature_channels
        self.regressors = nn.ModuleList(
            nn.ModuleList(regressor(s_channels[s], teacher.feature_channels[t]) for s, t in self.params["pairs"])
            for teacher in ctx.teachers)
        self.mask = CausalMask(ctx, self.params)

    def losses(self, batch, student, teachers):
        masks = self.mask(batch, teachers)
        cells, total = self.params["cells"], 0.0
        for k, (teacher, regs) in enumerate(zip(teachers, self.regressors)):
            for (s, t), reg in zip(self.params["pairs"], regs):
                target = teacher.features[t]
                size = target.shape[-1]
                weights = None if masks is None else to_pixels(masks[k], cells, (size, size))
                total = total + fa_distance(match_size(reg(student.features[s]), size), target, weights)
        return {"fa": self.params["weight"] * total / (len(teachers) * len(self.params["pairs"]))}

    def epoch_summary(self, probe):
        return self.mask.summary(probe)
