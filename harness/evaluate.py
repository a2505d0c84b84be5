"""Evaluation on a split held on the device: logits in batches, under inference mode."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


@torch.inference_mode()
def predict(model: nn.Module, images: Tensor, normalize, batch_size: int,
            autocast=contextlib.nullcontext) -> Tensor:
    """Float32 logits of every image (uint8 NHWC on the device). The caller sets eval mode."""
    outs = []
    for start in range(0, len(images), batch_size):
        with autocast():
            outs.append(model(normalize(images[start:start + batch_size])).float())
    return torch.cat(outs)


def top1(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent."""
    return (logits.argmax(1) == labels).sum().item() * 100 / len(labels)
