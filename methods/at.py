"""`at`: attention transfer (Zagoruyko & Komodakis 2017).

For a feature map F (B, C, H, W) the attention map is a(F) = mean_c |F|^p (p = 2), flattened and
L2-normalised, in float32 (small norms vanish in half precision). Per (student stage, teacher
stage) pair, maps of different resolutions are matched by average-pooling the larger to the
smaller, and the loss is

- `mode = "code"` (default, the authors' code): mean over batch and positions of (a_s − a_t)²;
- `mode = "paper"`: the paper's ‖a_s − a_t‖₂ per sample, averaged over the batch

(a known discrepancy between the two, attention-transfer issue #34), summed over pairs, averaged
over teachers, times `weight`. The default 1000 is the code's β, which scales the code's mean of
squared differences; on the paper's per-sample norm it gives losses in the thousands, so
`mode = "paper"` refuses it (the paper reports its β "about 0.1"): set `weight` explicitly there.
`pairs` defaults to the three CIFAR stages, student stage i ↔ teacher stage i.

With a causal mask (`mask` ≠ "none", see methods/causal_mask.py) both maps are restricted to the
kept positions and re-normalised there, so the term compares where the two attentions put their
mass inside the region that matters. The per-sample distance keeps the unmasked form: in `code`
mode (1/HW)·‖â_s − â_t‖² with unit vectors â over the kept region (squared differences summed over
kept positions, divided by all H·W positions), in `paper` mode ‖â_s − â_t‖. A masked term is
therefore on the scale of the unmasked one at the same `weight` whatever the kept fraction (an
all-ones mask gives exactly the unmasked term); averaging over kept positions instead would scale
it by 1/keep. Soft masks weight positions, rescaled to mean 1 over the positions they keep.
"""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from methods.base import Context, Param, Term, register
from methods.causal_mask import DEFAULTS as MASK_DEFAULTS, CausalMask, to_pixels


def attention(feature: Tensor, p: float = 2.0, size: int | None = None) -> Tensor:
    """(B, H, W) float32 attention energy mean_c |F|^p, average-pooled to `size` × `size` if given.
    One fused reduction (a p-norm over channels, accumulated in float32) instead of elementwise
    abs/pow/mean: the same number at a fraction of the memory traffic, forward and backward."""
    a = torch.linalg.vector_norm(feature, ord=p, dim=1, dtype=torch.float32).pow(p) / feature.shape[1]
    if size is not None and a.shape[-1] != size:
        a = F.adaptive_avg_pool2d(a[:, None], size)[:, 0]
    return a


def normalise(a: Tensor, weights: Tensor | None = None) -> Tensor:
    """Flatten and L2-normalise each map (restricted to `weights` > 0 when given)."""
    flat = a.flatten(1) if weights is None else a.flatten(1) * (weights.flatten(1) > 0)
    return F.normalize(flat, dim=1, eps=1e-12)


def at_distance(a_s: Tensor, a_t: Tensor, mode: str, weights: Tensor | None = None) -> Tensor:
    """The AT loss of one pair of (B, H, W) attention maps (masked: see the module's docstring)."""
    sq = (normalise(a_s, weights) - normalise(a_t, weights)).pow(2)
    if weights is not None:
        w = weights.flatten(1).float()
        kept = (w > 0).sum(1, keepdim=True).clamp(min=1)
        sq = sq * (w * kept / w.sum(1, keepdim=True).clamp(min=1e-12))  # mean 1 over the kept positions
    return sq.sum(1).sqrt().mean() if mode == "paper" else sq.mean()


@register
class AttentionTransfer(Term):
    name = "at"
    defaults = {"weight": Param(1000.0, minimum=0), "p": Param(2.0, above=0), "mode": Param("code", choices=("code", "paper")),
                "pairs": [[0, 0], [1, 1], [2, 2]], **MASK_DEFAULTS}
    uses_teachers = True

    def __init__(self, ctx: Context, **params):
        super().__init__(ctx, **params)
        # two parameters together: beyond what a declaration can say
        if self.params["mode"] == "paper" and self.params["weight"] == self.defaults["weight"]:
            raise ValueError(f"at: mode = 'paper' with weight = {self.defaults['weight']:g} (the code mode's β, which "
                             "gives paper-mode losses in the thousands); set at's weight for the paper's "
                             "per-sample norm (its β is about 0.1)")
        self.mask = CausalMask(ctx, self.params)

    def losses(self, batch, student, teachers):
        masks = self.mask(batch, teachers)
        p, mode, cells = self.params["p"], self.params["mode"], self.params["cells"]
        total = 0.0
        for k, teacher in enumerate(teachers):
            for s, t in self.params["pairs"]:
                size = min(student.features[s].shape[-1], teacher.features[t].shape[-1])
                weights = None if masks is None else to_pixels(masks[k], cells, (size, size))
                total = total + at_distance(attention(student.features[s], p, size),
                                            attention(teacher.features[t], p, size), mode, weights)
        return {"at": self.params["weight"] * total / len(teachers)}

    def epoch_summary(self, probe):
        return self.mask.summary(probe)
