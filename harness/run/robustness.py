"""CIFAR-10-C evaluation of a trained model, at the end of a job (grid section [eval]); CIFAR-100-C
for a CIFAR-100 grid (the same 19 corruptions; the metric names keep the `cifar10c_` prefix).

Each corruption's requested severities are read from the cache (`harness.data.cifar10c`) into one
pinned host buffer, copied to the device once, and classified in batches with the same
normaliser and autocast as the clean test set. The next corruption is read while the device still
works on the current one (two staging buffers); the device is synchronised once per corruption.

Writes `<job>/robustness.json` and returns the job metrics `cifar10c_mean_top1` (mean over the
standard 15 present, all requested severities), `cifar10c_mean_over` (which, and from which
source), `cifar10c_images` (test images per corruption × severity), `cifar10c_clean_top1` (the
clean top-1 on those same images) and `robustness_eval_s`.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from harness.atomic import atomic_write_json
from harness.data.cifar10c import load_cifar10c
from harness.data.corruptions import STANDARD, SEVERITIES
from harness.data.datasets import DEFAULT, get
from harness.run.evaluate import predict
from harness.run.layout import JobPaths


class _Staging:
    """Two reusable host buffers (pinned on CUDA) that corruption blocks are gathered into."""

    def __init__(self, device: torch.device):
        self.device, self.buffers, self.events, self.turn = device, [None, None], [None, None], 0

    def to_device(self, blocks: list[np.ndarray]) -> Tensor:
        total = sum(len(b) for b in blocks)
        if self.device.type != "cuda":
            return torch.from_numpy(np.concatenate(blocks))
        i, self.turn = self.turn, 1 - self.turn
        if self.events[i] is not None:
            self.events[i].synchronize()  # its last copy to the device is done: safe to overwrite
        if self.buffers[i] is None or len(self.buffers[i]) < total:
            self.buffers[i] = torch.empty((total, *blocks[0].shape[1:]), dtype=torch.uint8, pin_memory=True)
        host = self.buffers[i][:total]
        start = 0
        for b in blocks:
            host[start:start + len(b)].numpy()[...] = b  # the only read of the memory-mapped file
            start += len(b)
        out = host.to(self.device, non_blocking=True)
        self.events[i] = torch.cuda.Event()
        self.events[i].record()
        return out


def _blocks(root, corruptions, severities, limit, dataset):
    """(name, [(severity, images, labels, source)]) per corruption, in cache order."""
    current, group = None, []
    for name, severity, images, labels, source in load_cifar10c(root, corruptions, severities, limit, dataset):
        if name != current and group:
            yield current, group
            group = []
        current = name
        group.append((severity, images, labels, source))
    if group:
        yield current, group


def evaluate_corruptions(model: nn.Module, normalize, device: torch.device, root: str | Path,
                         corruptions="all", severities=SEVERITIES, limit: int | None = None,
                         batch_size: int = 1000, autocast=contextlib.nullcontext,
                         dataset: str = DEFAULT) -> tuple[list[dict], float]:
    """Top-1 of `model` on every corruption × severity; returns (rows, seconds)."""
    model.eval()
    start = time.perf_counter()
    staging, pending, rows = _Staging(device), None, []

    def finish(item):
        name, group, correct = item
        for (severity, images, _, source), c in zip(group, correct.tolist()):
            rows.append({"corruption": name, "severity": severity, "top1": 100.0 * c / len(images),
                         "n": len(images), "corruption_source": source})

    for name, group in _blocks(root, corruptions, severities, limit, dataset):
        images = staging.to_device([g[1] for g in group])
        labels = torch.from_numpy(np.concatenate([g[2] for g in group])).to(device, non_blocking=True)
        hits = predict(model, images, normalize, batch_size, autocast).argmax(1) == labels
        sizes = [len(g[1]) for g in group]
        correct = torch.stack([h.sum() for h in hits.split(sizes)])  # still on the device
        if pending is not None:
            finish(pending)  # the previous corruption: its results are ready or nearly
        pending = (name, group, correct)
    if pending is not None:
        finish(pending)
    return rows, time.perf_counter() - start


def summarize(rows: list[dict]) -> dict:
    """The headline mean over the standard 15 present (all severities evaluated), and what it covers."""
    standard = [r for r in rows if r["corruption"] in STANDARD]
    if not standard:
        return {"cifar10c_mean_top1": None, "cifar10c_mean_over": "no standard corruption evaluated"}
    names = sorted({r["corruption"] for r in standard}, key=STANDARD.index)
    sources = sorted({r["corruption_source"] for r in standard})
    severities = sorted({r["severity"] for r in standard})
    over = (f"{len(names)}/15 standard corruptions, severities {','.join(map(str, severities))}, "
            f"source {'+'.join(sources)}{' (MIXED)' if len(sources) > 1 else ''}"
            + ("" if len(names) == 15 else f": {','.join(names)}"))
    mean = float(np.mean([r["top1"] for r in standard]))
    return {"cifar10c_mean_top1": mean, "cifar10c_mean_over": over}


def clean_on_same_images(t, root: str | Path, rows: list[dict], dataset: str = DEFAULT) -> dict:
    """Top-1 on the clean test images the corruptions were made from (CIFAR-10-C holds the test set
    in order, so a `limit` of n means its first n images): the figure to set beside the corrupted
    ones, whose image count may differ from the clean test score's."""
    from harness.data.cache import open_arrays, read_manifest

    if not rows:
        return {}
    n = max(r["n"] for r in rows)
    arrays = open_arrays(root, read_manifest(root, dataset))
    images = torch.from_numpy(np.array(arrays["x_test"][:n])).to(t.data.device)
    labels = torch.from_numpy(np.array(arrays["y_test"][:n], dtype=np.int64)).to(t.data.device)
    logits = predict(t.model, images, t.data.normalize, t.eval_batch_size, t.accelerator.autocast)
    return {"cifar10c_clean_top1": 100.0 * (logits.argmax(1) == labels).float().mean().item(), "cifar10c_images": n}


def check_cache(root: str | Path, cfg: dict, dataset: str = DEFAULT) -> str | None:
    """What launch asks before anything runs: can the cache serve [eval]? None, or the problem."""
    from harness.data import DataError

    if not cfg.get("corruptions"):
        return None
    try:
        next(load_cifar10c(root, cfg["corruptions"], cfg.get("severities") or SEVERITIES, cfg.get("limit"), dataset))
    except DataError as e:
        return f"[eval] corruptions: {e}"
    except StopIteration:
        return f"[eval] corruptions = \"all\", but the {get(dataset).c_title} cache under {root} holds none"
    return None


def evaluate_job(t, spec: dict, folder: Path) -> dict:
    """What run_training calls at the end of a job: nothing unless [eval] asks for corruptions."""
    cfg = (spec.get("runtime") or {}).get("eval") or {}
    if not cfg.get("corruptions"):
        return {}
    dataset = spec["config"]["data"].get("dataset", DEFAULT)
    rows, seconds = evaluate_corruptions(t.model, t.data.normalize, t.data.device, spec["data_root"],
                                         cfg["corruptions"], cfg.get("severities") or SEVERITIES, cfg.get("limit"),
                                         t.eval_batch_size, t.accelerator.autocast, dataset)
    summary = {**summarize(rows), **clean_on_same_images(t, spec["data_root"], rows, dataset),
               "robustness_eval_s": seconds}
    images = sum(r["n"] for r in rows)
    atomic_write_json(JobPaths(folder).robustness, {"rows": rows, **summary, "images": images,
                                                    "images_per_s": images / seconds if seconds else None})
    return summary
