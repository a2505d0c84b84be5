"""`mate`: MATE-KD, several teachers weighted per sample by Grad-CAM agreement with the student.

For sample i and teacher k, with Grad-CAM maps m_s (student) and m_k (teacher) of the sample's
class (`methods.gradcam`), compared on one S × S grid and L2-normalised (m̂):

    s_ik = cos(m_s,i, m_k,i) = m̂_s,i · m̂_k,i                      similarity, in [0, 1]
    w_ik = softmax_k(s_ik / τ)                                      weights, detached
    loss = CE(z_s, y)
         + α · mean_i Σ_k w_ik · T² · KL(softmax(z_k,i/T) ‖ softmax(z_s,i/T))     (loss "kd")
         + β · mean_i Σ_k w_ik · ‖m̂_s,i − m̂_k,i‖²                                 (loss "cam")

The last term is 2 − 2·s_ik per sample: it pulls the student's map towards the maps of the
teachers that currently weigh most. Gradients reach the student through its logits and through
its last feature map (the Grad-CAM channel weights are detached; see `methods.gradcam`).

Parameters (`[methods.mate]`) and defaults:

- `temperature` T = 4, `alpha` α = 0.9: the harness's KD standard (methods/kd.py), so the soft
  term has the scale of `kd`'s; unlike `kd`, CE keeps weight 1, as the write-up's loss reads.
- `beta` β = 1: the write-up gives no value; the term is bounded by 2 and starts near 1, the
  scale of CE, so neither drowns the other.
- `tau` τ = 0.1. The similarities of non-negative maps lie in [0, 1] and teachers differ from one
  another by a few hundredths to a few tenths. With τ = 1 the weights could never leave
  [0.21, 0.58] for three teachers, whatever the maps: the method would be uniform KD in disguise.
  With τ = 0.1 a difference of 0.05 in similarity gives a 1.6× weight, 0.2 gives 7×: the weighting
  discriminates without becoming one-hot on noise.
- `weighting = "gradcam" | "uniform" | "confidence"`: the softmax above; 1/K for every teacher;
  or softmax_k(p_k(y_i) / τ) with p_k(y) the teacher's probability (at T = 1) of the true class —
  so a grid can ask whether the Grad-CAM weighting is what helps.
- `cam_class = "label" | "pred"`: the class each map explains: the label (as in training
  Grad-CAM), or each model's own top prediction.
- `cam_size` = 0: maps are compared at the coarsest map size among the student and its teachers
  (4 × 4 with DenseNet121 or VGG19-BN in the set, 8 × 8 with CIFAR ResNets only): nothing finer
  exists in every map. A positive value resamples all maps to that size instead.
- `teacher_cache = "off" | "clean"`: `off` runs the teachers on every augmented batch (under
  inference mode; their maps need no backward, see `methods.gradcam`). `clean` uses the harness's
  teacher cache: each teacher's logits and class maps of the un-augmented training images,
  computed once per teacher checkpoint. Cached maps are cropped and flipped exactly as the image
  was (bilinear resampling at sub-cell offsets, so they agree with maps of the augmented view only
  up to interpolation and the network's lack of exact translation equivariance). **Cached logits
  come from the clean view**, not the augmented one the student sees: the soft targets are those
  of the whole centred image (and with `cam_class = "pred"`, so is each teacher's predicted class).

Left open by the write-up, and chosen here: the L2 normalisation of the maps (so the attribution
loss and the similarity are the same quantity); the comparison size (coarsest); the class a map
explains (the label); detaching the weights (they are a choice of teacher, not something to
optimise — otherwise the student could lower the loss by changing which teacher it listens to);
and τ, α, β as above. "uniform" with β = 0 is multi-teacher KD with per-teacher KL terms — note
that it averages KLs, where `kd` with several teachers averages probabilities.

Logged per epoch (`epoch_summary`): each teacher's mean weight `mate_weight_<teacher>` and mean
similarity to the student `mate_sim_<teacher>` over the epoch's training steps (this rank's),
accumulated on the device without synchronising.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import Tensor
import torch.nn.functional as F

from methods.base import TEACHER_CACHE, Batch, Context, Outputs, Param, Term, cross_entropy, register
from methods.gradcam import CachedTeacher, class_maps, normalize, resample, select


class Attribution(NamedTuple):
    """What the weighting saw for one batch (all float32, detached except `student`)."""

    student: Tensor  # (B, S·S) normalised student maps (differentiable)
    teachers: Tensor  # (B, K, S·S) normalised teacher maps
    similarity: Tensor  # (B, K) cosine
    weights: Tensor  # (B, K), rows sum to 1
    size: int  # S


@register
class MateKD(Term):
    name = "mate"
    defaults = {"temperature": Param(4.0, above=0), "alpha": Param(0.9, minimum=0, maximum=1),
                "beta": Param(1.0, minimum=0), "tau": Param(0.1, above=0),
                "weighting": Param("gradcam", choices=("gradcam", "uniform", "confidence")),
                "cam_class": Param("label", choices=("label", "pred")),
                "cam_size": Param(0, minimum=0), "teacher_cache": TEACHER_CACHE}  # cam_size 0: the coarsest map
    uses_teachers = True
    supervises = True

    def __init__(self, ctx: Context, **params):
        super().__init__(ctx, **params)
        # Plain lists: held, not owned (never saved with the method, never optimised).
        self._student = [ctx.student]
        self._teachers = list(ctx.teachers)
        names = list(getattr(ctx, "teacher_names", None) or [])
        if len(names) != len(ctx.teachers) or len(set(names)) != len(names):
            names = [str(i) for i in range(len(ctx.teachers))]
        self.teacher_labels = [re.sub(r"[^0-9A-Za-z_]+", "_", n) for n in names]
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    # ------------------------------------------------------------------ maps and weights

    def attribution(self, batch: Batch, student: Outputs, teachers: list[Outputs]) -> Attribution:
        """Student and teacher maps of the batch on one grid, their similarities and the weights."""
        labels = batch.labels
        s_feature = student.features[-1]
        s_classes = labels if self.params["cam_class"] == "label" else student.logits.detach().argmax(1)
        t_classes = [labels if self.params["cam_class"] == "label" else t.logits.argmax(1) for t in teachers]
        image_size = batch.images.shape[-1]
        if self.cached:
            caches = self.cache()
            sizes = [s_feature.shape[-1], *(c.cams.shape[-1] for c in caches)]
        else:
            sizes = [s_feature.shape[-1], *(t.features[-1].shape[-1] for t in teachers)]
        size = self.params["cam_size"] or min(sizes)
        s_map = normalize(resample(select(class_maps(self._student[0], s_feature), s_classes).relu(), size, image_size))
        if self.cached:
            t_maps = [c.maps(batch.indices, cls, size, image_size, batch.crops, batch.flips)
                      for c, cls in zip(caches, t_classes)]
        else:
            t_maps = [resample(select(class_maps(m, t.features[-1]), cls).relu(), size, image_size)
                      for m, t, cls in zip(self._teachers, teachers, t_classes)]
        t_hat = normalize(torch.stack(t_maps, 1)).detach()
        with torch.autocast(s_map.device.type, enabled=False):  # float32 whatever the training precision
            similarity = torch.einsum("bd,bkd->bk", s_map.detach(), t_hat)
            weights = self.weigh(similarity, teachers, labels)
        return Attribution(s_map, t_hat, similarity, weights, size)

    def weigh(self, similarity: Tensor, teachers: list[Outputs], labels: Tensor) -> Tensor:
        tau, how = self.params["tau"], self.params["weighting"]
        if how == "uniform":
            return torch.full_like(similarity, 1 / similarity.shape[1])
        if how == "confidence":
            p_true = torch.stack([F.softmax(t.logits.float(), 1).gather(1, labels[:, None])[:, 0] for t in teachers], 1)
            return F.softmax(p_true / tau, dim=1)
        return F.softmax(similarity / tau, dim=1)

    # ------------------------------------------------------------------ losses

    def losses(self, batch, student, teachers):
        alpha, beta, T = self.params["alpha"], self.params["beta"], self.params["temperature"]
        att = self.attribution(batch, student, teachers)
        with torch.autocast(student.logits.device.type, enabled=False):
            log_p_s = F.log_softmax(student.logits.float() / T, dim=1)
            kl = torch.stack([F.kl_div(log_p_s, F.log_softmax(t.logits.float() / T, dim=1), log_target=True,
                                       reduction="none").sum(1) for t in teachers], 1)  # (B, K)
            kd = (att.weights * kl).sum(1).mean() * T**2
            cam = (att.weights * (att.student[:, None] - att.teachers).pow(2).sum(-1)).sum(1).mean()
        self._accumulate(att)
        return {"ce": cross_entropy(student.logits, batch.labels, self.label_smoothing),
                "kd": alpha * kd, "cam": beta * cam}

    def _accumulate(self, att: Attribution) -> None:
        self._count += len(att.weights)  # known on the host: no device read
        for key, value in (("weight", att.weights.detach().sum(0)), ("sim", att.similarity.detach().sum(0))):
            self._sums[key] = self._sums[key] + value if key in self._sums else value

    def epoch_summary(self, probe: Batch) -> dict[str, float]:
        """Each teacher's mean weight and mean similarity over the steps since the last call."""
        if not self._sums:
            return {}
        sums, n, self._sums, self._count = self._sums, self._count, {}, 0
        out = {}
        for key in ("weight", "sim"):
            for label, value in zip(self.teacher_labels, (sums[key] / n).tolist()):
                out[f"mate_{key}_{label}"] = value
        return out
