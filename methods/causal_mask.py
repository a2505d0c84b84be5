"""The causal mask of CAKD: align the student only where the teacher's evidence *causes* its
prediction.

At the teacher's alignment stage (`mask_stage`, default −1: its last stage, where the prediction
is formed and where intervening is cheapest) the feature map A is split into a `cells × cells`
grid. Each cell's causal effect is the drop in the teacher's log-probability of the true class
when the cell is removed:

- `intervention`: do(A_cell := per-channel spatial mean of A, for that sample), run the rest of the
  teacher from that stage, effect = log p_y(A) − log p_y(do). All cells of all samples go through
  the rest of the teacher as ONE batched call of B·cells² maps.
- `gradient`: its first-order estimate, effect ≈ Σ_cell (A − mean) · ∂ log p_y / ∂A, from one
  backward through the rest of the teacher (teacher parameters get no gradient). The CAKD write-up
  writes this with a leading minus; that sign is the *change* of log p_y, whose negative is the
  drop, so we use the drop for both modes and they rank cells alike (the tests check both pick
  the same region).
- `topk`: no causality, the teacher's own attention energy mean_c A² per cell (the ablation
  baseline).

The mask keeps the `keep` fraction of cells with the largest effect (ties: lower cell index), or
with `soft = true` weights cells by their positive effect normalised to sum 1 (uniform if no cell
has a positive effect). It is resized (nearest) to each aligned map; `at` and `fa` then compare
only kept positions. With several teachers each has its own mask. The write-up leaves the stage,
the intervention value and the cell grid open: we intervene with the per-sample channel mean (a
"remove the evidence" baseline that keeps the map's statistics), at the last stage, on 4×4 cells.

`cakd` is registered as the variant `kd+fa+at` with `mask = "intervention"`.
"""
from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as F

from methods.base import Batch, Context, Outputs, Param, register_variant

MODES = ("none", "topk", "intervention", "gradient")
DEFAULTS = {"mask": Param("none", choices=MODES), "cells": Param(4, minimum=1), "keep": Param(0.5, above=0, maximum=1), "soft": False,
            "mask_stage": -1}  # the mask parameters of the terms that take one (fa, at)


def cell_ids(height: int, width: int, cells: int, device) -> Tensor:
    """(H, W) index of the grid cell each position belongs to (row-major)."""
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return rows[:, None] * cells + cols[None, :]


def cell_sums(values: Tensor, cells: int) -> Tensor:
    """(B, H, W) → (B, cells²): sum of each cell."""
    ids = cell_ids(values.shape[1], values.shape[2], cells, values.device).flatten()
    out = values.new_zeros(values.shape[0], cells * cells)
    return out.index_add_(1, ids, values.flatten(1))


def true_class_logp(logits: Tensor, labels: Tensor) -> Tensor:
    return F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None])[:, 0]


def intervention_effects(teacher, feature: Tensor, stage: int, labels: Tensor, cells: int) -> Tensor:
    b, c, h, w = feature.shape
    feature = feature.float()
    k = cells * cells
    in_cell = cell_ids(h, w, cells, feature.device)[None] == torch.arange(k, device=feature.device)[:, None, None]
    mean = feature.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
    done = torch.where(in_cell[None, :, None], mean[:, None], feature[:, None])  # (B, K, C, H, W)
    with torch.inference_mode():
        logits = teacher.forward_from(stage, torch.cat([feature, done.flatten(0, 1)]))
        base, cut = true_class_logp(logits[:b], labels), true_class_logp(logits[b:], labels.repeat_interleave(k))
    return (base[:, None] - cut.view(b, k)).clone()


def gradient_effects(teacher, feature: Tensor, stage: int, labels: Tensor, cells: int) -> Tensor:
    with torch.enable_grad():
        a = feature.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(true_class_logp(teacher.forward_from(stage, a), labels).sum(), a)
    a = feature.detach().float()
    contribution = ((a - a.mean((2, 3), keepdim=True)) * grad.float()).sum(1)  # (B, H, W)
    return cell_sums(contribution, cells)


def topk_effects(feature: Tensor, cells: int) -> Tensor:
    return cell_sums(feature.float().pow(2).mean(1), cells)


def effects(mode: str, teacher, feature: Tensor, stage: int, labels: Tensor, cells: int) -> Tensor:
    """(B, cells²) float32 effect of each cell (larger: more important). The teacher's re-run is in
    float32 whatever the training precision: the effects (often 1e-5 to 1e-3 of log-probability on
    a confident teacher) are below bf16's resolution."""
    with torch.autocast(feature.device.type, enabled=False):
        if mode == "intervention":
            return intervention_effects(teacher, feature, stage, labels, cells)
        if mode == "gradient":
            return gradient_effects(teacher, feature, stage, labels, cells)
        return topk_effects(feature, cells)


def select(effect: Tensor, keep: float, soft: bool) -> Tensor:
    """(B, K) mask: top `keep` fraction as 1/0, or positive effects normalised to sum 1."""
    if soft:
        positive = effect.clamp(min=0)
        total = positive.sum(1, keepdim=True)
        return torch.where(total > 0, positive / total.clamp(min=1e-12), torch.full_like(effect, 1 / effect.shape[1]))
    n_keep = max(1, round(keep * effect.shape[1]))
    top = effect.topk(n_keep, dim=1, sorted=False).indices
    return torch.zeros_like(effect).scatter_(1, top, 1.0)


def to_pixels(mask: Tensor, cells: int, size: tuple[int, int]) -> Tensor:
    """(B, cells²) → (B, H, W): each position takes its cell's value."""
    ids = cell_ids(size[0], size[1], cells, mask.device)
    return mask[:, ids]


class CausalMask:
    """The mask options of a term (`mask`, `cells`, `keep`, `soft`, `mask_stage`), computed once per
    step for all the terms of a method that share the same options (memo in `ctx.shared`)."""

    def __init__(self, ctx: Context, params: dict):
        self.mode, self.cells, self.keep = params["mask"], params["cells"], params["keep"]
        self.soft, self.stage = params["soft"], params["mask_stage"]
        self.teachers, self.shared = ctx.teachers, ctx.shared
        for t in self.teachers if self.active else []:  # the models' map sizes: beyond the grid's declaration
            size = 32 // t.feature_strides[self.stage]
            if size < self.cells:
                raise ValueError(f"cells = {self.cells} needs a map of at least {self.cells}×{self.cells}; "
                                 f"the teacher's stage {self.stage} is {size}×{size}")
        self.key = ("causal_mask", self.mode, self.cells, self.keep, self.soft, self.stage)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def __call__(self, batch: Batch, teachers: list[Outputs]) -> list[Tensor] | None:
        """Per teacher, the (B, cells²) mask of this batch (None when masking is off)."""
        if not self.active:
            return None
        features = [t.features[self.stage] for t in teachers]
        memo = self.shared.get(self.key)
        if memo is None or any(a is not b for a, b in zip(memo[0], features)):
            masks = [select(effects(self.mode, model, f, self.stage, batch.labels, self.cells), self.keep, self.soft)
                     for model, f in zip(self.teachers, features)]
            memo = (features, masks)
            self.shared[self.key] = memo
            self.shared.setdefault("mask_kept", []).append(torch.stack([(m > 0).float().mean() for m in masks]).mean())
        return memo[1]

    def summary(self, probe: Batch) -> dict[str, float]:
        """Mean kept fraction since the last summary, and on the fixed probe batch the agreement
        (intersection over union of the kept cells) between `gradient` and `intervention`."""
        if not self.active:
            return {}
        memo = self.shared.get(self.key + ("summary",))
        if memo is not None and memo[0] is probe:  # another term of this method asked already
            return memo[1]
        kept = self.shared.pop("mask_kept", [])
        out = {"mask_kept_fraction": torch.stack(kept).mean().item()} if kept else {}
        ious = []
        for model in self.teachers:
            with torch.inference_mode():
                feature = model(probe.images, features=True)[1][self.stage]
            feature = feature.clone()  # out of inference mode: the gradient mode needs autograd
            pick = [select(effects(m, model, feature, self.stage, probe.labels, self.cells), self.keep, False) > 0
                    for m in ("gradient", "intervention")]
            ious.append(((pick[0] & pick[1]).sum(1) / (pick[0] | pick[1]).sum(1)).float().mean())
        out["mask_agreement"] = torch.stack(ious).mean().item()
        self.shared[self.key + ("summary",)] = (probe, out)
        return out


register_variant("cakd", terms=["kd", "fa", "at"], mask="intervention")
