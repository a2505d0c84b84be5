"""Grad-CAM for the zoo's models: batched, float32, at the last feature map (the Grad-CAM layer).

For a batch, one class c_i per sample and the last feature map A (B, C, h, w):

    α_ik = (1 / hw) Σ_xy ∂ z_{i,c_i} / ∂ A_{ik,xy}        channel weights
    M_i  = ReLU(Σ_k α_ik · A_ik)                           the map, h × w

**Closed form.** By the feature contract the logits depend on A only through
`z = fc(avgpool(A))`, so ∂ z_c / ∂ A_{k,xy} = fc.weight[c, k] / (hw) at every position and
α_ik = fc.weight[c_i, k] / (hw) exactly: no backward pass is needed, for teachers or for the
student. `gradcam_autograd` computes the same α with one batched `torch.autograd.grad` through
`model.head` (the definition; tests show both agree, and agree with a per-sample reference through
the whole network). Teachers' parameters never receive a gradient either way.

**The student's map stays differentiable** with respect to A, hence to every parameter before the
last feature map, so an attribution loss trains the student's features. The channel weights α are
detached (what `torch.autograd.grad` without `create_graph` gives, and what Grad-CAM defines): the
attribution loss moves *where* the student looks, not the classifier rows that weigh its channels.

`class_maps` gives the pre-ReLU maps Σ_k α_ck A_k for *every* class at once; the teacher cache
stores those, so the class a method explains (label or prediction) is chosen at training time.

**Comparing maps.** `resample` brings maps to one S × S grid (the method's `cam_size`) by bilinear
sampling at the centres of the output cells; it can at the same time apply a crop offset and a
horizontal flip, which is how cached maps of the clean image follow the augmentation (see its
docstring). `normalize` flattens and L2-normalises, so the cosine of two maps is a dot product and
‖m̂_s − m̂_t‖² = 2 − 2·cos ∈ [0, 2] (maps are ≥ 0, so cos ∈ [0, 1]). Everything here runs in float32
with autocast disabled: the epsilon of a normalisation vanishes in half precision.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

EPS = 1e-8


def float32(fn):
    """Run `fn` with autocast off (float32 maths whatever the training precision)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensor = next(a for a in args if isinstance(a, Tensor))
        with torch.autocast(tensor.device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def has_linear_head(model: nn.Module) -> bool:
    """Whether logits = fc(global average pool(A)) (every zoo model: the closed form applies)."""
    pool, fc = getattr(model, "pool", None), getattr(model, "fc", None)
    return (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
            and isinstance(fc, nn.Linear))


@float32
def class_maps(model: nn.Module, feature: Tensor) -> Tensor:
    """Pre-ReLU Grad-CAM maps of every class, (B, classes, h, w) float32: Σ_k fc.weight[c, k]/(hw) · A_k.
    Differentiable w.r.t. `feature`; the classifier weights are detached."""
    if not has_linear_head(model):
        raise ValueError(f"{type(model).__name__} has no global-pool + linear head: use gradcam_autograd")
    h, w = feature.shape[-2:]
    weight = model.fc.weight.detach().float() / (h * w)
    return torch.einsum("bkhw,ck->bchw", feature.float(), weight)


def select(maps: Tensor, classes: Tensor) -> Tensor:
    """maps (B, classes, h, w), classes (B,) → (B, h, w)."""
    return maps[torch.arange(len(classes), device=maps.device), classes]


def gradcam(model: nn.Module, feature: Tensor, classes: Tensor) -> Tensor:
    """Grad-CAM maps (B, h, w) float32 for one class per sample, closed form (see the module doc)."""
    return select(class_maps(model, feature), classes).relu()


@float32
def gradcam_autograd(model: nn.Module, feature: Tensor, classes: Tensor) -> Tensor:
    """The definition, for any head: α from one batched backward of Σ_i z_{i,c_i} through
    `model.head` alone (in eval mode samples do not interact, so one backward serves the batch)."""
    with torch.enable_grad():
        a = feature.detach().requires_grad_()
        logits = model.head(a)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), a)
    alpha = grad.float().mean((2, 3))
    return torch.einsum("bk,bkhw->bhw", alpha, feature.float()).relu()


def _axis_weights(n_src: int, size: int, extent: float, shift: Tensor | None, flip: Tensor | None,
                  batch: int, device) -> Tensor:
    """(batch, size, n_src) bilinear weights of one axis: output cell s of the augmented view
    ← source position in the clean image; scaled by the fraction of the output cell inside the
    clean image (the padding carries no map)."""
    step = extent / size
    x = ((torch.arange(size, device=device, dtype=torch.float32) + 0.5) * step).expand(batch, size)
    if flip is not None:
        x = torch.where(flip[:, None], extent - x, x)
    if shift is not None:
        x = x + shift[:, None].float()
    coverage = ((torch.clamp(x + step / 2, max=extent) - torch.clamp(x - step / 2, min=0.0)) / step).clamp(0, 1)
    p = (x * (n_src / extent) - 0.5).clamp(0, n_src - 1)
    i0 = p.floor()
    frac = p - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n_src - 1)
    weights = torch.zeros(batch, size, n_src, device=device)
    weights.scatter_add_(2, i0[..., None], (1 - frac)[..., None])
    weights.scatter_add_(2, i1[..., None], frac[..., None])
    return weights * coverage[..., None]


@float32
def resample(maps: Tensor, size: int, image_size: int = 32, shifts: Tensor | None = None,
             flips: Tensor | None = None) -> Tensor:
    """Maps (B, h, w) of images of `image_size` pixels → (B, size, size), float32.

    Each output cell takes the bilinear sample of the map at its centre (continuous pixel
    coordinates, pixel k spanning [k, k+1)). With `shifts` (B, 2) (row, col, in image pixels) and
    `flips` (B,), the output is the map of the *augmented* view whose pixel (i, j) is the clean
    pixel (i + Δr, j' + Δc), j' = image_size−1−j when flipped (the harness's crop-then-flip with
    Δ = crop − padding): the centre x of an output cell reads the clean map at (x flipped) + Δ.
    Cells that fall (partly) on the padding are scaled by the fraction inside the image.

    Exact where it can be: with no shift, a map of `size` comes back bit for bit (weights 1 and 0);
    halving (8 → 4) is an exact 2 × 2 average; shifts by whole cells move values exactly.
    Differentiable w.r.t. `maps`.
    """
    b, h, w = maps.shape
    rows = _axis_weights(h, size, float(image_size), None if shifts is None else shifts[:, 0], None,
                         b if shifts is not None else 1, maps.device)
    cols = _axis_weights(w, size, float(image_size), None if shifts is None else shifts[:, 1], flips,
                         b if shifts is not None or flips is not None else 1, maps.device)
    return rows @ maps.float() @ cols.transpose(1, 2)


@float32
def normalize(maps: Tensor) -> Tensor:
    """(B, ..., h, w) → (B, ..., h·w), each map L2-normalised in float32 (an all-zero map stays 0)."""
    flat = maps.float().flatten(-2)
    return flat / flat.norm(dim=-1, keepdim=True).clamp_min(EPS)


@dataclass
class CachedTeacher:
    """One teacher's outputs on the clean (un-augmented) training split, on the training device,
    as the harness's teacher cache loads them (methods never build it themselves).

    `logits` (N, classes) and `cams` (N, classes, h, w): the pre-ReLU `class_maps` of every class,
    both float16, row i = training image i (a batch's `indices`). `pad`: the augmentation's padding,
    so a batch's crop offsets minus `pad` are the shifts `resample` takes."""

    logits: Tensor
    cams: Tensor
    pad: int

    def maps(self, indices: Tensor, classes: Tensor, size: int, image_size: int,
             crops: Tensor | None, flips: Tensor | None) -> Tensor:
        """Grad-CAM maps (B, size, size) of the augmented view, float32: the clean map of each
        image's class, ReLU, then cropped and flipped like the image."""
        maps = self.cams[indices, classes].float().relu()
        shifts = None if crops is None else crops - self.pad
        return resample(maps, size, image_size, shifts, flips)


__all__ = ["CachedTeacher", "class_maps", "gradcam", "gradcam_autograd", "has_linear_head", "normalize",
           "resample", "select"]
