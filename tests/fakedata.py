"""Tiny stand-ins for CIFAR-10 and CIFAR-100 in tests: a canonical cache, and the official python
formats (CIFAR-10's batches, CIFAR-100's train/test/meta with fine and coarse labels).

Images are learnable on purpose: each class has its own colour and stripe pattern under noise, so a
small convnet (or even a per-class mean colour) separates them within an epoch or two, and both
survive random crops and flips.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from harness.data.cache import RawCifar, cache_dir, write_cache
from harness.data.datasets import CIFAR100

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
               b"dog", b"frog", b"horse", b"ship", b"truck"]
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]],
                   dtype=np.float32)


def balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """n labels, as equal per class as n allows, in random order."""
    return rng.permutation(np.arange(n) % len(LABEL_NAMES)).astype(np.uint8)


def fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 32, 32, 3) uint8: class colour + class stripes (orientation, period) + noise."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    angles = np.linspace(0, np.pi, len(LABEL_NAMES), endpoint=False)
    periods = np.array([4, 6, 8, 5, 7, 4, 6, 8, 5, 7], dtype=np.float32)
    stripes = np.stack([np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / p)
                        for a, p in zip(angles, periods)])  # (C, 32, 32)
    images = (PALETTE[labels][:, None, None, :] + 40 * stripes[labels][..., None]
              + rng.normal(0, 20, (len(labels), 32, 32, 3)).astype(np.float32))
    return np.clip(images, 0, 255).astype(np.uint8)


def fake_raw(n_train: int, n_test: int, seed: int = 0) -> RawCifar:
    rng = np.random.default_rng(seed)
    y_train, y_test = balanced_labels(n_train, rng), balanced_labels(n_test, rng)
    return RawCifar(x_train=fake_images(y_train, rng), y_train=y_train,
                    x_test=fake_images(y_test, rng), y_test=y_test)


def make_fake_cifar_cache(root: str | os.PathLike[str], n_train: int = 1000, n_test: int = 200,
                          seed: int = 0) -> Path:
    """Write a valid canonical cache (source "fake") under ``root``; returns ``<root>/cifar10``.

    Load it with a ``val_size`` below ``n_train`` (the default 5000 needs n_train > 5000).
    """
    write_cache(root, fake_raw(n_train, n_test, seed), source="fake")
    return cache_dir(root)


def _write_batch(path: Path, x: np.ndarray, y: np.ndarray, label: bytes) -> None:
    planar = x.transpose(0, 3, 1, 2).reshape(len(x), 3 * 32 * 32)  # NHWC -> RRR..GGG..BBB
    batch = {b"batch_label": label, b"labels": [int(v) for v in y], b"data": planar,
             b"filenames": [b"fake_%05d.png" % i for i in range(len(x))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_fake_python_batches(folder: str | os.PathLike[str], n_per_batch: int = 50,
                             n_test: int = 50, seed: int = 0) -> RawCifar:
    """Write data_batch_1..5, test_batch and batches.meta in the official python format.

    Returns the arrays a correct reader must produce (NHWC, train batches concatenated in order).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = fake_raw(5 * n_per_batch, n_test, seed)
    for i in range(5):
        rows = slice(i * n_per_batch, (i + 1) * n_per_batch)
        _write_batch(folder / f"data_batch_{i + 1}", raw.x_train[rows], raw.y_train[rows],
                     b"training batch %d of 5" % (i + 1))
    _write_batch(folder / "test_batch", raw.x_test, raw.y_test, b"testing batch 1 of 1")
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": LABEL_NAMES, b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return raw


# ------------------------------------------------------------------------------------- CIFAR-100

def fake_images_many(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 32, 32, 3) uint8 for any number of classes: a colour and a stripe pattern per class."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    k = np.arange(num_classes, dtype=np.float32)
    colours = 128 + 100 * np.stack([np.sin(2.4 * k), np.sin(2.4 * k + 2.1), np.sin(2.4 * k + 4.2)], 1)
    angles, periods = np.pi * ((0.618 * k) % 1), 4 + (k % 5)
    stripes = np.sin(2 * np.pi * (xx * np.cos(angles[labels])[:, None, None]
                                  + yy * np.sin(angles[labels])[:, None, None]) / periods[labels][:, None, None])
    images = (colours[labels][:, None, None, :] + 30 * stripes[..., None]
              + rng.normal(0, 10, (len(labels), 32, 32, 3)).astype(np.float32))
    return np.clip(images, 0, 255).astype(np.uint8)


def fake_raw100(n_train: int, n_test: int, seed: int = 0) -> RawCifar:
    """Fake CIFAR-100 arrays: balanced fine labels, their official superclasses as coarse labels."""
    rng = np.random.default_rng(seed)
    to_coarse = np.asarray(CIFAR100.fine_to_coarse, dtype=np.uint8)
    labels = [rng.permutation(np.arange(n) % CIFAR100.num_classes).astype(np.uint8) for n in (n_train, n_test)]
    return RawCifar(x_train=fake_images_many(labels[0], CIFAR100.num_classes, rng), y_train=labels[0],
                    x_test=fake_images_many(labels[1], CIFAR100.num_classes, rng), y_test=labels[1],
                    y_train_coarse=to_coarse[labels[0]], y_test_coarse=to_coarse[labels[1]])


def make_fake_cifar100_cache(root: str | os.PathLike[str], n_train: int = 1000, n_test: int = 200,
                             seed: int = 0) -> Path:
    """Write a valid CIFAR-100 cache (source "fake") under ``root``; returns ``<root>/cifar100``."""
    write_cache(root, fake_raw100(n_train, n_test, seed), source="fake", dataset="cifar100")
    return cache_dir(root, "cifar100")


def _write_cifar100_file(path: Path, x: np.ndarray, y: np.ndarray, coarse: np.ndarray, label: bytes) -> None:
    planar = x.transpose(0, 3, 1, 2).reshape(len(x), 3 * 32 * 32)  # NHWC -> RRR..GGG..BBB
    batch = {b"filenames": [b"fake_%05d.png" % i for i in range(len(x))], b"batch_label": label,
             b"fine_labels": [int(v) for v in y], b"coarse_labels": [int(v) for v in coarse], b"data": planar}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_fake_cifar100_python(folder: str | os.PathLike[str], n_train: int = 200, n_test: int = 100,
                              seed: int = 0) -> RawCifar:
    """Write train, test and meta in the official cifar-100-python format (a dict per file with
    bytes keys: data (N, 3072) uint8 channel-planar, fine_labels, coarse_labels, filenames,
    batch_label; meta: fine_label_names, coarse_label_names).

    Returns the arrays a correct reader must produce (NHWC, fine labels as y_*)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = fake_raw100(n_train, n_test, seed)
    _write_cifar100_file(folder / "train", raw.x_train, raw.y_train, raw.y_train_coarse, b"training batch 1 of 1")
    _write_cifar100_file(folder / "test", raw.x_test, raw.y_test, raw.y_test_coarse, b"testing batch 1 of 1")
    meta = {b"fine_label_names": [n.encode() for n in CIFAR100.class_names],
            b"coarse_label_names": [n.encode() for n in CIFAR100.coarse_class_names]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return raw
