"""`dist`: DIST (Huang et al., NeurIPS 2022), matching class relations by Pearson correlation instead of KL.

With Y_s = softmax(z_s / τ) and Y_t = softmax(z_t / τ) as (batch × classes) matrices and
ρ(u, v) = the Pearson correlation of two vectors,
- inter-class relation: 1 − mean over samples i of ρ(Y_s[i, :], Y_t[i, :]) (the rows);
- intra-class relation: 1 − mean over classes c of ρ(Y_s[:, c], Y_t[:, c]) (the columns, over the batch);

Loss = ce_weight · CE(z_s, y) + β · τ² · inter + γ · τ² · intra. ρ as the official code computes it:
the cosine of the centred vectors with eps = 1e-8 added to the product of their norms (a constant
vector, e.g. a column over a batch of one, gives ρ = 0). Computed in float32. Logged as `ce`,
`dist_inter` (β · τ² · inter) and `dist_intra` (γ · τ² · intra).

Defaults: the official CIFAR-100 setting. The loss is hunto/image_classification_sota (the
`classification` submodule of hunto/DIST_KD), lib/models/losses/dist_kd.py `DIST(beta, gamma, tau)`;
configs/strategies/distill/dist_cifar.yaml sets `kd: dist_t4` (lib/models/losses/kd_loss.py builds
DIST(beta=1, gamma=1, tau=4)), `kd_loss_weight: 2` and `ori_loss_weight: 1`: so τ = 4, β = γ = 2
(the loss weight times DIST's own β = γ = 1), CE weight 1. On ImageNet (resnet_dist.yaml,
dist_b2.yaml) `kd: dist`, i.e. τ = 1, with the same weights 2 and 1.

Several teachers: Y_t is the mean of their softened probabilities (as `kd`). The intra-class term
depends on the batch: its size and composition (the last, smaller batch of an epoch included).
`teacher_cache = "clean"`: the teachers' logits come from the harness's cache, as for `kd`.
"""
from __future__ import annotations

from torch import Tensor
import torch.nn.functional as F

from methods.base import TEACHER_CACHE, Param, Term, cross_entropy, register
from methods.kd import soft_targets

EPS = 1e-8  # the official code's, added to the product of the norms


def pearson_rows(a: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`, as (rows,)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(student_logits: Tensor, teacher_logits: list[Tensor], temperature: float) -> tuple[Tensor, Tensor]:
    """(inter, intra): 1 − the mean Pearson correlation of the rows, and of the columns, of the
    student's and the teachers' mean softened probabilities (without τ²); float32."""
    y_s = F.softmax(student_logits.float() / temperature, dim=1)
    y_t = soft_targets(teacher_logits, temperature)
    return 1 - pearson_rows(y_s, y_t).mean(), 1 - pearson_rows(y_s.T, y_t.T).mean()


@register
class DIST(Term):
    name = "dist"
    defaults = {"beta": Param(2.0, minimum=0), "gamma": Param(2.0, minimum=0), "temperature": Param(4.0, above=0),
                "ce_weight": Param(1.0, minimum=0), "teacher_cache": TEACHER_CACHE}
    uses_teachers = True
    supervises = True

    def losses(self, batch, student, teachers):
        p = self.params
        inter, intra = dist_relations(student.logits, [t.logits for t in teachers], p["temperature"])
        t2 = p["temperature"] ** 2
        return {
            "ce": p["ce_weight"] * cross_entropy(student.logits, batch.labels, self.label_smoothing),
            "dist_inter": p["beta"] * t2 * inter,
            "dist_intra": p["gamma"] * t2 * intra,
        }
