"""`dkd`: Decoupled KD (Zhao et al., CVPR 2022), KD split into target and non-target parts weighted apart.

With p = softmax(z / T) over the C classes and y the label, KD's KL splits into
- TCKD = T² · KL(b_t ‖ b_s), b = (p_y, 1 − p_y): the binary target / non-target probabilities;
- NCKD = T² · KL(q_t ‖ q_s), q = softmax over the C − 1 non-target logits (the target class left
  out; the official code subtracts 1000 from its logit before the softmax, the same to float
  precision). KL(p_t ‖ p_s) = TCKD + (1 − p_t,y) · NCKD (up to T²), which DKD decouples:

Loss = ce_weight · CE(z_s, y) + r · (α · TCKD + β · NCKD), r = min(1, epoch_float / warmup_epochs)
(no warm-up at warmup_epochs = 0), the KLs averaged over the batch. Computed in float32, the
binary log-probabilities from log-sum-exps (the official code takes the log of summed
probabilities). Logged as `ce`, `tckd` (r · α · TCKD) and `nckd` (r · β · NCKD).

Defaults: the official code's CIFAR-100 defaults (megvii-research/mdistiller,
mdistiller/engine/cfg.py `CFG.DKD`): α = 1, β = 8, T = 4, warm-up 20 epochs, CE weight 1. Its
per-pair configs (configs/cifar100/dkd/*.yaml, teacher → student: β) change only β:
resnet56 → resnet20: 2; resnet110 → resnet32: 2; vgg13 → vgg8: 6; vgg13 → MobileNetV2: 6;
wrn_40_2 → wrn_16_2: 6; wrn_40_2 → wrn_40_1: 6; resnet32x4 → resnet8x4, resnet32x4 → ShuffleV1,
resnet32x4 → ShuffleV2, ResNet50 → MobileNetV2, wrn_40_2 → ShuffleV1: 8 (the default). On ImageNet
(configs/imagenet/*/dkd.yaml): T = 1, warm-up 1 epoch, β = 0.5 (ResNet34 → ResNet18) and 2
(ResNet50 → MobileNetV1). The official warm-up is min(epoch / 20, 1) with epochs counted from 1
and constant within an epoch (1/20 in the first); here it is linear per step from 0 (the method
interface's `Progress.epoch_float`), reaching 1 after `warmup_epochs` epochs.

Several teachers: p_t is the mean of their softened probabilities (as `kd`), and TCKD/NCKD are those
of that mean: b_t = (mean p_y, 1 − mean p_y) and q_t = the mean's non-target part renormalised,
i.e. each teacher's q weighted by its non-target mass 1 − p_y (computed as a softmax over teachers
of log(1 − p_y), stable when a teacher is confident). With one teacher this is the paper's DKD.

`standardize = true` z-scores the student's and the teachers' logits per sample before dividing by
T (logit standardisation, Sun et al., CVPR 2024; see `methods.kd.zscore`). Its official code
(sunshangquan/logit-standardization-KD, README and tools/train.py `--logit-stand`) then uses
T = 2 and multiplies α and β by a KD weight of 9 (α = 9, β = 9 · β_pair; CE weight and warm-up
unchanged); the per-pair runs it logs (logs/DKD/dkd,TEACHER,STUDENT,T,WEIGHT,β) vary T in 2–3 and
the weight in 9–18, e.g. resnet56 → resnet20: T = 3, weight 18, β_pair = 2 (α = 18, β = 36).

`teacher_cache = "clean"`: the teachers' logits come from the harness's cache, as for `kd`.
"""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from methods.base import TEACHER_CACHE, Param, Term, cross_entropy, register
from methods.kd import zscore


def _split(logits: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """log b = (log p_y, log(1 − p_y)) as (B, 2), and the non-target logits / T as (B, C − 1)."""
    z = logits.float() / temperature
    keep = ~F.one_hot(labels, z.shape[1]).bool()
    rest = z[keep].view(z.shape[0], z.shape[1] - 1)
    total = torch.logsumexp(z, dim=1, keepdim=True)
    log_b = torch.cat([z.gather(1, labels[:, None]) - total, torch.logsumexp(rest, 1, keepdim=True) - total], 1)
    return log_b, rest


def dkd_losses(student_logits: Tensor, teacher_logits: list[Tensor], labels: Tensor,
               temperature: float) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each T² · KL averaged over the batch, against the mean of the teachers'
    softened probabilities; float32."""
    log_b_s, rest_s = _split(student_logits, labels, temperature)
    splits = [_split(z, labels, temperature) for z in teacher_logits]
    log_b_t = torch.stack([log_b for log_b, _ in splits])  # (K, B, 2)
    b_t = log_b_t.exp().mean(0)
    weights = torch.softmax(log_b_t[:, :, 1], dim=0)  # (K, B): each teacher's share of the non-target mass
    q_t = sum(w[:, None] * F.softmax(rest, dim=1) for w, (_, rest) in zip(weights, splits))
    t2 = temperature**2
    tckd = F.kl_div(log_b_s, b_t, reduction="batchmean") * t2
    nckd = F.kl_div(F.log_softmax(rest_s, dim=1), q_t, reduction="batchmean") * t2
    return tckd, nckd


@register
class DecoupledKD(Term):
    name = "dkd"
    defaults = {"alpha": Param(1.0, minimum=0), "beta": Param(8.0, minimum=0), "temperature": Param(4.0, above=0),
                "warmup_epochs": Param(20.0, minimum=0), "ce_weight": Param(1.0, minimum=0),
                "standardize": False, "teacher_cache": TEACHER_CACHE}
    uses_teachers = True
    supervises = True

    def warmup(self) -> float:
        epochs = self.params["warmup_epochs"]
        return 1.0 if epochs == 0 else min(1.0, self.progress.epoch_float / epochs)

    def losses(self, batch, student, teachers):
        p = self.params
        prep = zscore if p["standardize"] else (lambda z: z)
        tckd, nckd = dkd_losses(prep(student.logits), [prep(t.logits) for t in teachers], batch.labels,
                                p["temperature"])
        ramp = self.warmup()
        return {
            "ce": p["ce_weight"] * cross_entropy(student.logits, batch.labels, self.label_smoothing),
            "tckd": ramp * p["alpha"] * tckd,
            "nckd": ramp * p["beta"] * nckd,
        }
