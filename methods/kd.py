"""`kd`: Hinton et al. 2015 knowledge distillation.

Loss = (1 − α) · CE(z_s, y) + α · T² · KL(p_t ‖ softmax(z_s / T)), with p_t = softmax(z_t / T) and
the KL averaged over the batch. With several teachers, p_t is the mean of their softened
probabilities (an ensemble in probability space, not of logits). The T² factor keeps the gradient
scale of the soft term independent of T. Defaults T = 4, α = 0.9 (Hinton et al.'s and the common CIFAR setting).
Computed in float32 whatever the autocast precision.

`standardize = true` z-scores the student's and the teachers' logits per sample before dividing by T
(logit standardisation, Sun et al., CVPR 2024, see `zscore`); CE stays on the raw logits. Its
official code (sunshangquan/logit-standardization-KD, README and tools/train.py `--logit-stand
--base-temp 2 --kd-weight 9`, on mdistiller's KD with CE weight 0.1) uses T = 2 with
0.1 · CE + 9 · T² · KL, which the (1 − α, α) weights here express only up to scale (α = 90/91 gives the
ratio, with a total 9.1× smaller); its per-pair logs (logs/KD/kd,TEACHER,STUDENT,T,WEIGHT) use T = 2–4
and weights 1–12 (e.g. resnet56 → resnet20: T = 2, weight 9).

`teacher_cache = "clean"` reads the teachers' logits from the harness's teacher cache (computed
once on the clean, un-augmented training images) instead of running the teachers every step: far
cheaper with several large teachers, at the price that the soft targets are those of the clean
view of each image, not of its augmented crop.
"""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from methods.base import TEACHER_CACHE, Param, Term, cross_entropy, register


def zscore(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Logit standardisation (Sun et al., CVPR 2024): per sample, (z − mean(z)) / (eps + std(z)) over
    the classes, float32. As the official code (sunshangquan/logit-standardization-KD,
    mdistiller/distillers/KD.py `normalize`): the unbiased standard deviation (N − 1) and eps = 1e-7
    added to it, not under the square root."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (eps + z.std(dim=1, keepdim=True))


def soft_targets(teacher_logits: list[Tensor], temperature: float) -> Tensor:
    """Mean over teachers of softmax(z_t / T), float32."""
    return torch.stack([F.softmax(z.float() / temperature, dim=1) for z in teacher_logits]).mean(0)


def kd_loss(student_logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """T² · KL(targets ‖ softmax(z_s / T)), averaged over the batch."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, targets, reduction="batchmean") * temperature**2


@register
class KnowledgeDistillation(Term):
    name = "kd"
    defaults = {"temperature": Param(4.0, above=0), "alpha": Param(0.9, minimum=0, maximum=1),
                # added after kd results were published: left out of their job keys while false
                "standardize": Param(False, keyed_at_default=False), "teacher_cache": TEACHER_CACHE}
    uses_teachers = True
    supervises = True

    def losses(self, batch, student, teachers):
        alpha, temperature = self.params["alpha"], self.params["temperature"]
        prep = zscore if self.params["standardize"] else (lambda z: z)
        targets = soft_targets([prep(t.logits) for t in teachers], temperature)
        return {
            "ce": (1 - alpha) * cross_entropy(student.logits, batch.labels, self.label_smoothing),
            "kd": alpha * kd_loss(prep(student.logits), targets, temperature),
        }
