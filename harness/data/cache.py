"""The canonical CIFAR-10 cache: write it, verify it, load it, split it.

Layout of ``<root>/cifar10/``::

    x_train.npy  (N, 32, 32, 3) uint8 NHWC      y_train.npy  (N,) uint8
    x_test.npy   (M, 32, 32, 3) uint8 NHWC      y_test.npy   (M,) uint8
    manifest.json  {"format": 1, "dataset": "cifar10", "source", "created", "official",
                    "files": {name: {"sha256", "shape", "dtype"}}}

A file's ``sha256`` is the digest of the array's data in C order (not of the ``.npy`` file), so it
equals the digests published for the decoded official set. The manifest is written last: a cache
without one is incomplete. Training reads only this cache, memory-mapped and without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import atomic_save_npy, atomic_write_json

CACHE_DIR = "cifar10"
MANIFEST = "manifest.json"
FORMAT = 1
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
ARRAYS = ("x_train", "y_train", "x_test", "y_test")

# SHA-256 of the official arrays, decoded to uint8 NHWC (computed from the official python batches).
OFFICIAL_SHA256 = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}

Seed = int | Sequence[int]


class DataError(Exception):
    """The dataset cache is missing, incomplete, corrupt, or asked for something it cannot give.

    ``reason`` is the message without the suggested fix, for callers that print their own.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def _cache_error(root: str | os.PathLike[str], reason: str, *, force: bool = True) -> DataError:
    return DataError(f"{reason}: {prepare_hint(root, force=force)}", reason)


@dataclass(frozen=True)
class RawCifar:
    """The four arrays a source produces, before splitting."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}


@dataclass(frozen=True)
class Cifar:
    """Loaded CIFAR-10, all arrays uint8 in RAM, images NHWC."""

    x_train: np.ndarray  # the training split: after val is held out, after limit_train
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray  # after limit_test
    y_test: np.ndarray
    source: str  # the manifest's source


def cache_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root).expanduser() / CACHE_DIR


def prepare_hint(root: str | os.PathLike[str], *, force: bool = False) -> str:
    flag = " --force" if force else ""
    return f"run `python -m harness.data prepare --root {Path(root).expanduser()}{flag}`"


def array_sha256(array: np.ndarray) -> str:
    """Digest of the array's data in C order; memory-mapped arrays are hashed without a copy."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


# --------------------------------------------------------------------------------------- writing

def check_raw(raw: RawCifar) -> None:
    """Refuse arrays that would make a malformed cache (any N, but consistent and in range)."""
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise ValueError(f"{split}: dtypes {x.dtype}/{y.dtype}, expected uint8")
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or y.shape != (x.shape[0],):
            raise ValueError(f"{split}: shapes {x.shape}/{y.shape}, expected (N, 32, 32, 3)/(N,)")
        if x.shape[0] == 0:
            raise ValueError(f"{split}: no images")
        if y.max() >= NUM_CLASSES:
            raise ValueError(f"{split}: label {int(y.max())} out of range 0..{NUM_CLASSES - 1}")


def write_cache(root: str | os.PathLike[str], raw: RawCifar, source: str) -> dict[str, Any]:
    """Write the canonical cache under ``root`` and return its manifest."""
    check_raw(raw)
    directory = cache_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    # Drop the old manifest first so that a half-rebuilt cache never looks complete.
    (directory / MANIFEST).unlink(missing_ok=True)
    files = {}
    for name, array in raw.arrays().items():
        array = np.ascontiguousarray(array)
        atomic_save_npy(directory / f"{name}.npy", array)
        files[f"{name}.npy"] = {"sha256": array_sha256(array), "shape": list(array.shape),
                                "dtype": str(array.dtype)}
    manifest = {
        "format": FORMAT,
        "dataset": "cifar10",
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "official": all(files[f"{n}.npy"]["sha256"] == d for n, d in OFFICIAL_SHA256.items()),
    }
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


# --------------------------------------------------------------------------------------- reading

def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    directory = cache_dir(root)
    path = directory / MANIFEST
    if not path.is_file():
        if directory.is_dir():
            raise _cache_error(root, f"incomplete CIFAR-10 cache at {directory} (no manifest)")
        raise _cache_error(root, f"no CIFAR-10 cache at {directory}", force=False)
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        ok = manifest.get("format") == FORMAT and all(f"{n}.npy" in files for n in ARRAYS)
    except (ValueError, KeyError, TypeError) as e:
        raise _cache_error(root, f"unreadable manifest {path} ({e})") from e
    if not ok:
        raise _cache_error(root, f"manifest {path} is not format {FORMAT} with all four arrays")
    return manifest


def open_arrays(root: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Memory-map the four arrays and check shape and dtype against the manifest (cheap)."""
    directory, arrays = cache_dir(root), {}
    for name in ARRAYS:
        path, entry = directory / f"{name}.npy", manifest["files"][f"{name}.npy"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _cache_error(root, f"cannot read {path} ({e})") from e
        if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
            raise _cache_error(root, f"{path} is {array.dtype}{list(array.shape)}, manifest says "
                                     f"{entry['dtype']}{entry['shape']}")
        arrays[name] = array
    for split in ("train", "test"):  # like check_raw, but without scanning the labels
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or y.shape != (x.shape[0],):
            raise _cache_error(root, f"malformed cache at {directory}: {split} shapes "
                                     f"{x.shape}/{y.shape}, expected (N, 32, 32, 3)/(N,)")
    return arrays


STAMP = ".verified.json"  # what the files looked like when their digests last matched the manifest


def _file_states(directory: Path) -> dict[str, list[int]]:
    states = {}
    for name in (*(f"{n}.npy" for n in ARRAYS), MANIFEST):
        st = (directory / name).stat()
        states[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return states


def verify_cache_once(root: str | os.PathLike[str]) -> dict[str, Any]:
    """`verify_cache`, remembered: the arrays are re-hashed only when a file's size, modification
    time or inode changed since they last matched (a stamp file in the cache), so every job trusts
    verified data at the cost of a few stat calls."""
    manifest, directory = read_manifest(root), cache_dir(root)
    try:
        states = _file_states(directory)
    except OSError as e:
        raise _cache_error(root, f"cannot read {directory} ({e})") from e
    try:
        if json.loads((directory / STAMP).read_text()) == states:
            return manifest
    except (OSError, ValueError):
        pass
    verify_cache(root)
    try:
        atomic_write_json(directory / STAMP, states)
    except OSError:
        pass  # a read-only cache: verified again next time
    return manifest


def verify_cache(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Re-hash every array against the manifest; raise DataError naming the first bad file."""
    manifest = read_manifest(root)
    for name, array in open_arrays(root, manifest).items():
        if array_sha256(array) != manifest["files"][f"{name}.npy"]["sha256"]:
            path = cache_dir(root) / f"{name}.npy"
            raise _cache_error(root, f"{path} is corrupt (SHA-256 differs from the manifest)")
    return manifest


# ------------------------------------------------------------------------------------- splitting

def stratified_subset(labels: np.ndarray, n: int, seed: Seed) -> np.ndarray:
    """Sorted indices of ``n`` items drawn per class in proportion to the class sizes.

    Balanced labels give exactly n/C per class; when n is not divisible, the +1s go to a seeded
    choice of classes. Every random draw is independent of ``n``, so on balanced labels a smaller
    subset is contained in a larger one with the same seed.
    """
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot take {n} of {len(labels)} items")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    tie_order = rng.permutation(len(classes))
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    quotas = _largest_remainder(counts, n, tie_order)
    picked = [m[:q] for m, q in zip(members, quotas)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.intp)


def _largest_remainder(counts: np.ndarray, n: int, tie_order: np.ndarray) -> np.ndarray:
    # Integer arithmetic, so equal classes get exactly equal shares (no float ties to break).
    total = int(counts.sum())
    quotas, remainders = np.divmod(counts.astype(np.int64) * n, max(total, 1))
    short = n - int(quotas.sum())
    rank = np.lexsort((tie_order, -remainders))  # biggest remainder first, seeded tie-break
    quotas[rank[:short]] += 1
    return quotas


def stratified_split(labels: np.ndarray, n_holdout: int, seed: Seed) -> tuple[np.ndarray, np.ndarray]:
    """``(keep_idx, holdout_idx)``: a stratified holdout of ``n_holdout`` and the rest, both sorted."""
    holdout = stratified_subset(labels, n_holdout, seed)
    keep = np.setdiff1d(np.arange(len(labels)), holdout, assume_unique=True)
    return keep, holdout


# --------------------------------------------------------------------------------------- loading

def _check_sizes(n_train: int, n_test: int, val_size: int, limit_train: int | None,
                 limit_test: int | None) -> None:
    if not 0 <= val_size < n_train:
        raise DataError(f"val_size={val_size} must be in [0, {n_train}) for {n_train} training images")
    left = n_train - val_size
    if limit_train is not None and not 1 <= limit_train <= left:
        raise DataError(f"limit_train={limit_train} must be in [1, {left}]: {n_train} training "
                        f"images minus val_size={val_size}")
    if limit_test is not None and not 1 <= limit_test <= n_test:
        raise DataError(f"limit_test={limit_test} must be in [1, {n_test}] test images")


def load_cifar10(root: str | os.PathLike[str], *, val_size: int = 5000, limit_train: int | None = None,
                 limit_test: int | None = None, split_seed: int = 0, verify: bool = False) -> Cifar:
    """Load the cache under ``root``, hold out a stratified val split, optionally subsample.

    ``split_seed`` fixes the val split (keep it constant across runs; it is not a run seed).
    ``limit_train`` subsamples the training split after val is held out, ``limit_test`` the test
    set; both stratified and derived from ``split_seed``. The arrays' digests are checked against
    the manifest whenever the files changed since their last check; ``verify`` re-hashes always.
    """
    manifest = verify_cache(root) if verify else verify_cache_once(root)
    a = open_arrays(root, manifest)
    _check_sizes(len(a["y_train"]), len(a["y_test"]), val_size, limit_train, limit_test)
    y_train_all = np.asarray(a["y_train"])
    keep, val = stratified_split(y_train_all, val_size, split_seed)
    if limit_train is not None:
        keep = keep[stratified_subset(y_train_all[keep], limit_train, (split_seed, 1))]
    test = (np.arange(len(a["y_test"])) if limit_test is None
            else stratified_subset(np.asarray(a["y_test"]), limit_test, (split_seed, 2)))
    # Fancy indexing copies the selected rows out of the memory map into RAM.
    take = lambda name, idx: np.asarray(a[name][idx])  # noqa: E731
    return Cifar(x_train=take("x_train", keep), y_train=take("y_train", keep),
                 x_val=take("x_train", val), y_val=take("y_train", val),
                 x_test=take("x_test", test), y_test=take("y_test", test),
                 source=str(manifest.get("source", "unknown")))
