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


ECE_BINS = 15


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood (nats) of the labels."""
    return torch.nn.functional.cross_entropy(logits.float(), labels).item()


def reliability(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (i/bins, (i+1)/bins]: count, mean confidence, accuracy (0-1)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    index = (conf * bins).ceil().long().clamp(1, bins) - 1
    counts = torch.bincount(index, minlength=bins).float()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, conf.double())
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct.double())
    safe = counts.double().clamp(min=1)
    return [{"count": int(c), "confidence": float(s), "accuracy": float(a)}
            for c, s, a in zip(counts.tolist(), (conf_sum / safe).tolist(), (acc_sum / safe).tolist())]


def ece(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error in percent: sum over bins of |B|/n · |accuracy(B) − confidence(B)|."""
    table = reliability(probs, labels, bins)
    n = sum(b["count"] for b in table)
    return 100 * sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)


def confusion(pred: Tensor, labels: Tensor, n_classes: int) -> list[dict]:
    """Long confusion table: one {true, pred, count} per non-empty cell."""
    counts = torch.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).tolist()
    return [{"true": i // n_classes, "pred": i % n_classes, "count": c} for i, c in enumerate(counts) if c]


def agreement(a: Tensor, b: Tensor) -> float:
    """Top-1 agreement of two sets of predictions (class indices or logits), in percent."""
    a = a.argmax(1) if a.dim() == 2 else a
    b = b.argmax(1) if b.dim() == 2 else b
    return (a == b).float().mean().item() * 100


def job_metrics(t, folder, teacher_names=()) -> dict:
    """The end-of-job test metrics of the trainer's current (final) weights: NLL, ECE (15 bins) and
    its reliability table, per-class accuracy, the confusion matrix (`<folder>/confusion.json`), and
    with teachers the top-1 agreement with each teacher and with their ensemble (mean of their
    probabilities). Main process only; JSON-valued metrics are JSON strings (Parquet columns)."""
    import json
    from pathlib import Path

    from harness.atomic import atomic_write_json

    images, labels = t.data.test
    t.model.eval()
    logits = predict(t.model, images, t.data.normalize, t.eval_batch_size, t.accelerator.autocast).float()
    probs = logits.softmax(1)
    pred, n_classes = logits.argmax(1), logits.shape[1]
    cells = confusion(pred, labels, n_classes)
    totals = torch.bincount(labels, minlength=n_classes).tolist()
    right = torch.bincount(labels[pred == labels], minlength=n_classes).tolist()
    out = {"test_nll": nll(logits, labels), "test_ece": ece(probs, labels),
           "test_reliability": json.dumps(reliability(probs, labels)),
           "test_per_class_top1": json.dumps([100 * r / n if n else None for r, n in zip(right, totals)])}
    atomic_write_json(Path(folder) / "confusion.json", cells)
    teachers = list(getattr(t.method, "teachers", []) or [])
    if teachers:
        names = list(teacher_names) if len(teacher_names) == len(teachers) else [f"t{i}" for i in range(len(teachers))]
        ensemble, each = torch.zeros_like(probs), {}
        for name, teacher in zip(names, teachers):
            teacher_logits = predict(teacher, images, t.data.normalize, t.eval_batch_size, t.accelerator.autocast)
            ensemble += teacher_logits.float().softmax(1) / len(teachers)
            each[name] = agreement(pred, teacher_logits)
        out.update(agreement_ensemble=agreement(pred, ensemble), agreement_teachers=json.dumps(each))
    return out
