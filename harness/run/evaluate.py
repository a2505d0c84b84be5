"""Evaluation on a split held on the device: logits in batches, under inference mode.

Metrics are computed where the logits are, accumulators included (`metric_tensors`, the
`*_sums`/`*_counts` functions), and read back to the host once, at the end (`read_metrics`,
`reliability_table`): a tensor made without `device=` would meet the device's tensors and fail."""
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


def reliability_sums(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> Tensor:
    """(3, bins) float64 on the device of `probs`: per equal-width confidence bin (i/bins, (i+1)/bins],
    its count, summed confidence and number correct. Fixed-size accumulators on the data's device:
    nothing is read back until `reliability_table`."""
    conf, pred = probs.max(1)
    index = (conf * bins).ceil().long().clamp(1, bins) - 1
    values = torch.stack([torch.ones_like(conf), conf, (pred == labels).to(conf.dtype)]).double()
    return torch.zeros(3, bins, dtype=torch.float64, device=probs.device).index_add_(1, index, values)


def reliability_table(sums: Tensor) -> list[dict]:
    """`reliability_sums` read back: per bin, count, mean confidence and accuracy (0-1)."""
    counts, conf_sums, correct = sums.tolist()
    return [{"count": int(c), "confidence": s / max(c, 1.0), "accuracy": a / max(c, 1.0)}
            for c, s, a in zip(counts, conf_sums, correct)]


def reliability(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (i/bins, (i+1)/bins]: count, mean confidence, accuracy (0-1)."""
    return reliability_table(reliability_sums(probs, labels, bins))


def ece_of(table: list[dict]) -> float:
    """Expected calibration error in percent of a reliability table: sum over bins of
    |B|/n · |accuracy(B) − confidence(B)|."""
    n = sum(b["count"] for b in table)
    return 100 * sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)


def ece(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error in percent (see `ece_of`)."""
    return ece_of(reliability(probs, labels, bins))


def confusion_counts(pred: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(n_classes²,) counts on the device of the predictions; cell true · n_classes + pred."""
    return torch.bincount(labels * n_classes + pred, minlength=n_classes * n_classes)


def confusion_cells(counts: list[int], n_classes: int) -> list[dict]:
    """Long confusion table: one {true, pred, count} per non-empty cell."""
    return [{"true": i // n_classes, "pred": i % n_classes, "count": c} for i, c in enumerate(counts) if c]


def confusion(pred: Tensor, labels: Tensor, n_classes: int) -> list[dict]:
    """Long confusion table of predicted class indices: one {true, pred, count} per non-empty cell."""
    return confusion_cells(confusion_counts(pred, labels, n_classes).tolist(), n_classes)


def agreement_fraction(a: Tensor, b: Tensor) -> Tensor:
    """Top-1 agreement (0-1) of two sets of predictions (class indices or logits), left on the device."""
    a = a.argmax(1) if a.dim() == 2 else a
    b = b.argmax(1) if b.dim() == 2 else b
    return (a == b).float().mean()


def agreement(a: Tensor, b: Tensor) -> float:
    """Top-1 agreement of two sets of predictions (class indices or logits), in percent."""
    return agreement_fraction(a, b).item() * 100


def metric_tensors(logits: Tensor, labels: Tensor, teacher_logits: list[Tensor]) -> dict[str, Tensor]:
    """Everything the end-of-job metrics need, computed on the device of the logits; `read_metrics`
    reads it back. With teachers: the agreement with each and with their ensemble (the mean of
    their probabilities)."""
    logits = logits.float()
    probs, pred, n_classes = logits.softmax(1), logits.argmax(1), logits.shape[1]
    out = {"nll": torch.nn.functional.cross_entropy(logits, labels),
           "reliability": reliability_sums(probs, labels),
           "confusion": confusion_counts(pred, labels, n_classes),
           "class_totals": torch.bincount(labels, minlength=n_classes),
           "class_right": torch.bincount(labels[pred == labels], minlength=n_classes)}
    if teacher_logits:
        ensemble = torch.zeros_like(probs)
        for each in teacher_logits:
            ensemble += each.float().softmax(1) / len(teacher_logits)
        out["agreement_teachers"] = torch.stack([agreement_fraction(pred, each) for each in teacher_logits])
        out["agreement_ensemble"] = agreement_fraction(pred, ensemble)
    return out


def read_metrics(tensors: dict[str, Tensor], teacher_names: list[str]) -> tuple[dict, list[dict]]:
    """`metric_tensors` read back: (the metrics, JSON-valued ones as JSON strings; the confusion cells)."""
    import json

    table = reliability_table(tensors["reliability"])
    totals, right = tensors["class_totals"].tolist(), tensors["class_right"].tolist()
    out = {"test_nll": tensors["nll"].item(), "test_ece": ece_of(table), "test_reliability": json.dumps(table),
           "test_per_class_top1": json.dumps([100 * r / n if n else None for r, n in zip(right, totals)])}
    if "agreement_teachers" in tensors:
        each = {name: value * 100 for name, value in zip(teacher_names, tensors["agreement_teachers"].tolist())}
        out.update(agreement_ensemble=tensors["agreement_ensemble"].item() * 100, agreement_teachers=json.dumps(each))
    return out, confusion_cells(tensors["confusion"].tolist(), n_classes=len(totals))


def job_metrics(t, folder, teacher_names=()) -> dict:
    """The end-of-job test metrics of the trainer's current (final) weights: NLL, ECE (15 bins) and
    its reliability table, per-class accuracy, the confusion matrix (`<folder>/confusion.json`), and
    with teachers the top-1 agreement with each teacher and with their ensemble (mean of their
    probabilities). Main process only; JSON-valued metrics are JSON strings (Parquet columns)."""
    from pathlib import Path

    from harness.atomic import atomic_write_json
    from harness.run.layout import JobPaths

    images, labels = t.data.test
    t.model.eval()
    teachers = list(getattr(t.method, "teachers", []) or [])
    names = list(teacher_names) if len(teacher_names) == len(teachers) else [f"t{i}" for i in range(len(teachers))]

    def logits_of(model):
        return predict(model, images, t.data.normalize, t.eval_batch_size, t.accelerator.autocast)

    tensors = metric_tensors(logits_of(t.model), labels, [logits_of(teacher) for teacher in teachers])
    out, cells = read_metrics(tensors, names)
    atomic_write_json(JobPaths(Path(folder)).confusion, cells)
    return out
