"""The canonical dataset cache: write it, verify it, load it, split it.

Layout of ``<root>/<dataset>/`` (``cifar10/``, ``cifar100/``: see :mod:`harness.data.datasets`)::

    x_train.npy  (N, 32, 32, 3) uint8 NHWC      y_train.npy  (N,) uint8
    x_test.npy   (M, 32, 32, 3) uint8 NHWC      y_test.npy   (M,) uint8
    y_train_coarse.npy, y_test_coarse.npy       CIFAR-100 only: the 20 superclasses (y_* are the
                                                100 fine classes)
    manifest.json  {"format": 1, "dataset": "cifar10", "source", "created", "official",
                    "official_check", "files": {name: {"sha256", "shape", "dtype"}}}

A file's ``sha256`` is the digest of the array's data in C order (not of the ``.npy`` file), so it
equals the digests published for the decoded official set. ``official`` says the arrays are the
official set's: by those digests where the registry has them (CIFAR-10), else by the md5 of the
official files the source read (CIFAR-100); ``official_check`` says which. The manifest is written
last: a cache without one is incomplete. Training reads only this cache, memory-mapped and without
pickle.
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
from harness.data import datasets as D
from harness.data.datasets import DatasetSpec

# CIFAR-10's, kept for the code that names them; every function takes a `dataset` (name or spec).
CACHE_DIR = D.CIFAR10.cache_dir
MANIFEST = "manifest.json"
FORMAT = 1
NUM_CLASSES = D.CIFAR10.num_classes
IMAGE_SHAPE = (32, 32, 3)
ARRAYS = D.CIFAR10.arrays
OFFICIAL_SHA256 = dict(D.CIFAR10.official_sha256 or {})

Seed = int | Sequence[int]
Dataset = str | DatasetSpec


class DataError(Exception):
    """The dataset cache is missing, incomplete, corrupt, or asked for something it cannot give.

    ``reason`` is the message without the suggested fix, for callers that print their own.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def _cache_error(root: str | os.PathLike[str], reason: str, *, force: bool = True,
                 dataset: Dataset = D.DEFAULT) -> DataError:
    return DataError(f"{reason}: {prepare_hint(root, force=force, dataset=dataset)}", reason)


def spec_of(dataset: Dataset) -> DatasetSpec:
    """The registry entry of a dataset name; DataError naming the choices for an unknown one."""
    try:
        return D.get(dataset)
    except ValueError as e:
        raise DataError(str(e)) from None


@dataclass(frozen=True)
class RawCifar:
    """The arrays a source produces, before splitting (with CIFAR-100's coarse labels too).

    ``official_source``: the source checked its files against the official md5s, which decides
    ``official`` for a dataset whose array digests the registry lacks.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_train_coarse: np.ndarray | None = None
    y_test_coarse: np.ndarray | None = None
    official_source: bool = False

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class Cifar:
    """A loaded dataset (CIFAR-10 unless ``dataset`` says otherwise), uint8 in RAM, images NHWC.

    ``y_*`` are the labels models learn (CIFAR-100's fine labels); ``y_*_coarse`` CIFAR-100's
    superclasses of the same images, None for a dataset without them.
    """

    x_train: np.ndarray  # the training split: after val is held out, after limit_train
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray  # after limit_test
    y_test: np.ndarray
    source: str  # the manifest's source
    dataset: str = D.DEFAULT
    y_train_coarse: np.ndarray | None = None
    y_val_coarse: np.ndarray | None = None
    y_test_coarse: np.ndarray | None = None

    @property
    def spec(self) -> DatasetSpec:
        return D.get(self.dataset)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names


def cache_dir(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> Path:
    return Path(root).expanduser() / spec_of(dataset).cache_dir


def prepare_hint(root: str | os.PathLike[str], *, force: bool = False, dataset: Dataset = D.DEFAULT) -> str:
    name = spec_of(dataset).name
    flags = ("" if name == D.DEFAULT else f" --dataset {name}") + (" --force" if force else "")
    return f"run `python -m harness.data prepare --root {Path(root).expanduser()}{flags}`"


def array_sha256(array: np.ndarray) -> str:
    """Digest of the array's data in C order; memory-mapped arrays are hashed without a copy."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


# --------------------------------------------------------------------------------------- writing

def check_raw(raw: RawCifar, dataset: Dataset = D.DEFAULT) -> None:
    """Refuse arrays that would make a malformed cache (any N, but consistent and in range; with
    coarse labels exactly where the dataset has them, each class in one superclass)."""
    spec = spec_of(dataset)
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise ValueError(f"{split}: dtypes {x.dtype}/{y.dtype}, expected uint8")
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or y.shape != (x.shape[0],):
            raise ValueError(f"{split}: shapes {x.shape}/{y.shape}, expected (N, 32, 32, 3)/(N,)")
        if x.shape[0] == 0:
            raise ValueError(f"{split}: no images")
        if y.max() >= spec.num_classes:
            raise ValueError(f"{split}: label {int(y.max())} out of range 0..{spec.num_classes - 1}")
        coarse = getattr(raw, f"y_{split}_coarse")
        if not spec.has_coarse:
            if coarse is not None:
                raise ValueError(f"{split}: coarse labels given, but {spec.title} has none")
            continue
        if coarse is None:
            raise ValueError(f"{split}: no coarse labels ({spec.title} has {spec.num_coarse_classes} superclasses)")
        if coarse.dtype != np.uint8 or coarse.shape != y.shape:
            raise ValueError(f"{split}: coarse labels {coarse.dtype}{list(coarse.shape)}, expected uint8{list(y.shape)}")
        if coarse.max() >= spec.num_coarse_classes:
            raise ValueError(f"{split}: coarse label {int(coarse.max())} out of range 0..{spec.num_coarse_classes - 1}")
        pairs = np.unique(y.astype(np.int64) * spec.num_coarse_classes + coarse)
        fine = pairs // spec.num_coarse_classes
        if len(np.unique(fine)) != len(fine):
            label = int(fine[np.flatnonzero(np.diff(fine) == 0)[0]])
            raise ValueError(f"{split}: class {label} has images in several superclasses")


def write_cache(root: str | os.PathLike[str], raw: RawCifar, source: str,
                dataset: Dataset = D.DEFAULT) -> dict[str, Any]:
    """Write the canonical cache of ``dataset`` under ``root`` and return its manifest."""
    spec = spec_of(dataset)
    check_raw(raw, spec)
    directory = cache_dir(root, spec)
    directory.mkdir(parents=True, exist_ok=True)
    # Drop the old manifest first so that a half-rebuilt cache never looks complete.
    (directory / MANIFEST).unlink(missing_ok=True)
    files = {}
    for name, array in raw.arrays().items():
        array = np.ascontiguousarray(array)
        atomic_save_npy(directory / f"{name}.npy", array)
        files[f"{name}.npy"] = {"sha256": array_sha256(array), "shape": list(array.shape),
                                "dtype": str(array.dtype)}
    if spec.official_sha256 is not None:
        official = all(files[f"{n}.npy"]["sha256"] == d for n, d in spec.official_sha256.items())
        check = "the arrays' SHA-256 equal the official set's"
    else:
        official = bool(raw.official_source)
        check = "the source's files had the official md5 (no published array digests to compare)"
    manifest = {
        "format": FORMAT,
        "dataset": spec.name,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "official": official,
        "official_check": check,
    }
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


# --------------------------------------------------------------------------------------- reading

def read_manifest(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, Any]:
    spec = spec_of(dataset)
    directory = cache_dir(root, spec)
    path = directory / MANIFEST
    if not path.is_file():
        if directory.is_dir():
            raise _cache_error(root, f"incomplete {spec.title} cache at {directory} (no manifest)", dataset=spec)
        raise _cache_error(root, f"no {spec.title} cache at {directory}", force=False, dataset=spec)
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        ok = manifest.get("format") == FORMAT and all(f"{n}.npy" in files for n in spec.arrays)
        named = manifest.get("dataset", D.DEFAULT)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _cache_error(root, f"unreadable manifest {path} ({e})", dataset=spec) from e
    if named != spec.name:
        raise _cache_error(root, f"manifest {path} is of dataset {named!r}, not {spec.name!r}", dataset=spec)
    if not ok:
        raise _cache_error(root, f"manifest {path} is not format {FORMAT} with all {len(spec.arrays)} arrays "
                                 f"({', '.join(spec.arrays)})", dataset=spec)
    return manifest


def open_arrays(root: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Memory-map the dataset's arrays (the manifest names the dataset) and check shape and dtype
    against the manifest (cheap)."""
    spec = spec_of(manifest.get("dataset", D.DEFAULT))
    directory, arrays = cache_dir(root, spec), {}
    for name in spec.arrays:
        path, entry = directory / f"{name}.npy", manifest["files"][f"{name}.npy"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _cache_error(root, f"cannot read {path} ({e})", dataset=spec) from e
        if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
            raise _cache_error(root, f"{path} is {array.dtype}{list(array.shape)}, manifest says "
                                     f"{entry['dtype']}{entry['shape']}", dataset=spec)
        arrays[name] = array
    for split in ("train", "test"):  # like check_raw, but without scanning the labels
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        coarse = arrays.get(f"y_{split}_coarse", y)
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or y.shape != (x.shape[0],) or coarse.shape != y.shape:
            raise _cache_error(root, f"malformed cache at {directory}: {split} shapes "
                                     f"{x.shape}/{y.shape}, expected (N, 32, 32, 3)/(N,)", dataset=spec)
    return arrays


STAMP = ".verified.json"  # what the files looked like when their digests last matched the manifest


def _file_states(directory: Path, spec: DatasetSpec) -> dict[str, list[int]]:
    states = {}
    for name in (*(f"{n}.npy" for n in spec.arrays), MANIFEST):
        st = (directory / name).stat()
        states[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return states


def verify_cache_once(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, Any]:
    """`verify_cache`, remembered: the arrays are re-hashed only when a file's size, modification
    time or inode changed since they last matched (a stamp file in the cache), so every job trusts
    verified data at the cost of a few stat calls."""
    spec = spec_of(dataset)
    manifest, directory = read_manifest(root, spec), cache_dir(root, spec)
    try:
        states = _file_states(directory, spec)
    except OSError as e:
        raise _cache_error(root, f"cannot read {directory} ({e})", dataset=spec) from e
    try:
        if json.loads((directory / STAMP).read_text()) == states:
            return manifest
    except (OSError, ValueError):
        pass
    verify_cache(root, spec.name)
    try:
        atomic_write_json(directory / STAMP, states)
    except OSError:
        pass  # a read-only cache: verified again next time
    return manifest


def verify_cache(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, Any]:
    """Re-hash every array against the manifest; raise DataError naming the first bad file."""
    spec = spec_of(dataset)
    manifest = read_manifest(root, spec)
    for name, array in open_arrays(root, manifest).items():
        if array_sha256(array) != manifest["files"][f"{name}.npy"]["sha256"]:
            path = cache_dir(root, spec) / f"{name}.npy"
            raise _cache_error(root, f"{path} is corrupt (SHA-256 differs from the manifest)", dataset=spec)
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


def load_dataset(root: str | os.PathLike[str], name: Dataset = D.DEFAULT, *, val_size: int = 5000,
                 limit_train: int | None = None, limit_test: int | None = None, split_seed: int = 0,
                 verify: bool = False) -> Cifar:
    """Load the cache of dataset ``name`` under ``root``, hold out a stratified val split,
    optionally subsample.

    ``split_seed`` fixes the val split (keep it constant across runs; it is not a run seed).
    ``limit_train`` subsamples the training split after val is held out, ``limit_test`` the test
    set; all stratified by the (fine) labels and derived from ``split_seed``. The arrays' digests
    are checked against the manifest whenever the files changed since their last check; ``verify``
    re-hashes always.
    """
    spec = spec_of(name)
    manifest = verify_cache(root, spec.name) if verify else verify_cache_once(root, spec.name)
    a = open_arrays(root, manifest)
    _check_sizes(len(a["y_train"]), len(a["y_test"]), val_size, limit_train, limit_test)
    y_train_all = np.asarray(a["y_train"])
    keep, val = stratified_split(y_train_all, val_size, split_seed)
    if limit_train is not None:
        keep = keep[stratified_subset(y_train_all[keep], limit_train, (split_seed, 1))]
    test = (np.arange(len(a["y_test"])) if limit_test is None
            else stratified_subset(np.asarray(a["y_test"]), limit_test, (split_seed, 2)))
    # Fancy indexing copies the selected rows out of the memory map into RAM.
    take = lambda name, idx: np.asarray(a[name][idx]) if name in a else None  # noqa: E731
    return Cifar(x_train=take("x_train", keep), y_train=take("y_train", keep),
                 x_val=take("x_train", val), y_val=take("y_train", val),
                 x_test=take("x_test", test), y_test=take("y_test", test),
                 source=str(manifest.get("source", "unknown")), dataset=spec.name,
                 y_train_coarse=take("y_train_coarse", keep), y_val_coarse=take("y_train_coarse", val),
                 y_test_coarse=take("y_test_coarse", test))


def load_cifar10(root: str | os.PathLike[str], *, val_size: int = 5000, limit_train: int | None = None,
                 limit_test: int | None = None, split_seed: int = 0, verify: bool = False) -> Cifar:
    """``load_dataset(root, "cifar10", ...)``: the CIFAR-10 cache under ``root``."""
    return load_dataset(root, "cifar10", val_size=val_size, limit_train=limit_train, limit_test=limit_test,
                        split_seed=split_seed, verify=verify)
