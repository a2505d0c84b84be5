"""The teacher cache: each teacher's logits and Grad-CAM class maps of the clean training split,
computed once per teacher checkpoint and shared by every student job of a grid.

Asked for by a method parameter `teacher_cache = "clean"` (e.g. `[methods.mate]`); the harness
(`harness.run.train.build_trainer`) builds or reuses it before training and hands it to the method
through `Context.teacher_caches`, one `methods.gradcam.CachedTeacher` per teacher, on the device.

Layout, one folder per teacher × data split × precision::

    <results>/<grid>/teacher_cache/<teacher key>-<digest>/
        logits.npy     (N, classes) float16         row i = training image i, un-augmented
        cams.npy       (N, classes, h, w) float16   pre-ReLU Grad-CAM maps of every class
        manifest.json  what it was built from, shapes, SHA-256 of each array (written last)

`<teacher key>` is the teacher's job key (the SHA-256 of the checkpoint for a teacher given as a
file); `<digest>` hashes the data config (split, limits) and the training precision, so another
split or precision gets another cache. The manifest also records the checkpoint's SHA-256 and the
training labels' digest; a cache whose manifest is missing (partial), unreadable, or disagrees with
the files or with what it should have been built from is rebuilt.

Concurrency: several jobs may start together. The first takes an exclusive `fcntl.flock` on
`<folder>.lock`, builds into a temporary folder beside it (arrays, then the manifest, each fsynced)
and renames it into place; the others wait on the lock and then find a valid cache. A build that
dies leaves only a temporary folder, removed by the next builder. (flock needs a filesystem that
honours it across the nodes that share it; local disks and most NFS setups do.)

Teachers run in the training precision under inference mode on the un-augmented images (centre
crop of the padded image, no flip: exactly what `DeviceData.probe_batch` gives).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from harness.atomic import atomic_write_json
from harness.data.cache import array_sha256
from harness.data.device import PAD, DeviceData, to_device
from methods.gradcam import CachedTeacher, class_maps

FORMAT = 1
ARRAYS = ("logits", "cams")
MANIFEST = "manifest.json"


def folder_for(root: Path, teacher_key: str, data_config: dict, precision: str) -> Path:
    blob = json.dumps({"format": FORMAT, "data": data_config, "precision": precision}, sort_keys=True)
    return Path(root) / f"{teacher_key}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def device_outputs(model: nn.Module, data: DeviceData, autocast,
                   batch_size: int = 1000) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(first index, logits, all-class maps) of each batch of clean training images, on the device."""
    for start in range(0, data.n_train, batch_size):
        batch = data.clean_batch(start, start + batch_size)
        with torch.inference_mode(), autocast():
            logits, features = model(batch.images, features=True)
            cams = class_maps(model, features[-1])
        yield start, logits, cams  # outside the contexts: they would otherwise hold over the caller's code


def compute(model: nn.Module, data: DeviceData, autocast, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """The arrays of one teacher: logits and all-class maps of every clean training image."""
    logits_out, cams_out = None, None
    n = data.n_train
    for start, logits, cams in device_outputs(model, data, autocast, batch_size):
        if logits_out is None:
            logits_out = np.empty((n, *logits.shape[1:]), np.float16)
            cams_out = np.empty((n, *cams.shape[1:]), np.float16)
        logits_out[start:start + len(logits)] = logits.float().half().cpu().numpy()
        cams_out[start:start + len(cams)] = cams.half().cpu().numpy()
    return {"logits": logits_out, "cams": cams_out}


def problem(folder: Path, expected: dict) -> str | None:
    """Why the cache in `folder` cannot be used (None: it can)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "missing" if not folder.exists() else "partial (no manifest)"
    except (OSError, ValueError):
        return "unreadable manifest"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"built from another {key}"
    for name in ARRAYS:
        info = manifest.get("files", {}).get(name, {})
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return f"{name}.npy missing or unreadable"
        if list(array.shape) != info.get("shape") or str(array.dtype) != info.get("dtype"):
            return f"{name}.npy has shape {list(array.shape)} {array.dtype}, manifest says {info.get('shape')} {info.get('dtype')}"
        if array_sha256(array) != info.get("sha256"):
            return f"{name}.npy does not match its SHA-256 (corrupt)"
    return None


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def ensure(folder: Path, expected: dict, build: Callable[[], dict[str, np.ndarray]],
           log: Callable[[str], None] = lambda s: None) -> bool:
    """Make `folder` a valid cache, building it (under an exclusive lock) unless it already is one.
    Returns whether this call built it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        why = problem(folder, expected)
        if why is None:
            return False
        log(f"teacher cache {folder.name}: {why}; building it")
        for stale in folder.parent.glob(f".{folder.name}.*"):  # earlier builders that died
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.build-"))
        try:
            start = time.perf_counter()
            arrays = build()
            files = {}
            for name in ARRAYS:
                _write_npy(tmp / f"{name}.npy", arrays[name])
                files[name] = {"shape": list(arrays[name].shape), "dtype": str(arrays[name].dtype),
                               "sha256": array_sha256(arrays[name])}
            atomic_write_json(tmp / MANIFEST, {**expected, "files": files,
                                              "build_seconds": round(time.perf_counter() - start, 3)})
            if folder.exists():  # an invalid cache: out of the way first (rename is atomic, rmtree is not)
                trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.trash-"))
                os.replace(folder, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, folder)
            with contextlib.suppress(OSError):
                fd = os.open(folder.parent, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"teacher cache {folder.name}: built in {time.perf_counter() - start:.1f}s")
        return True


def load(folder: Path, device: torch.device) -> CachedTeacher:
    """The cache's arrays (memory-mapped, then copied) on the training device."""
    arrays = {name: np.array(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
              for name in ARRAYS}
    return CachedTeacher(logits=to_device(arrays["logits"], device), cams=to_device(arrays["cams"], device), pad=PAD)


def prepare(root: Path, keys: list[str], checkpoints: list[str], models: list[nn.Module], data: DeviceData,
            data_config: dict, precision: str, autocast, batch_size: int = 1000,
            log: Callable[[str], None] | None = None) -> list[CachedTeacher]:
    """One valid cache per teacher under `root` (built where missing or invalid), loaded on the device."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    labels = array_sha256(data.train_labels.cpu().numpy())
    caches = []
    for key, path, model in zip(keys, checkpoints, models):
        folder = folder_for(root, key, data_config, precision)
        expected = {"format": FORMAT, "teacher_key": key, "checkpoint_sha256": file_sha256(path),
                    "data": data_config, "precision": precision, "n_train": data.n_train, "labels_sha256": labels}
        ensure(folder, expected, lambda: compute(model, data, autocast, batch_size), log)
        caches.append(load(folder, data.device))
    return caches


def wanted(method_spec: dict) -> bool:
    """Whether a resolved method asks for the teacher cache (a term parameter teacher_cache = "clean")."""
    return any(p.get("teacher_cache") == "clean" for p in method_spec.get("params", {}).values())
