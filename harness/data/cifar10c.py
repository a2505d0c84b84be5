"""CIFAR-10-C (and CIFAR-100-C) in the cache: `<root>/cifar10c/<corruption>.npy` (5·N, 32, 32, 3)
uint8, rows [(s−1)·N, s·N) severity s of the first N CIFAR-10 test images (N = 10,000 for the full
set), `labels.npy` (5·N,) and `manifest.json` saying per corruption where it came from. CIFAR-100-C
is the same in `<root>/cifar100c/` (fine labels), made from or published for the CIFAR-100 test
images: every function takes a `dataset` (see :mod:`harness.data.datasets`; default cifar10).

- ``official``: the published arrays (Zenodo record 2535967, CIFAR-100-C 3555552, or their `.npy`
  files from a folder);
- ``generated``: made here by :mod:`harness.data.corruptions` from the cached test images, with
  its seed and an ``approximation`` note: ``fidelity`` ``exact`` (the reference's formula and
  rounding) or ``distribution``, ``random`` (whether it draws random numbers: an exact random
  corruption still matches the published set in distribution only, the reference's draws being
  unknown) and a one-line ``reason``; the manifest's ``fidelity_levels`` defines both levels.
  frost is generated only from the reference's photographs given with ``--frost-dir PATH``; its
  entry records their folder, SHA-256 and whether they are the reference's.

Prepare with ``python -m harness.data prepare --root DIR --cifar10-c generate|official|dir:PATH``
(``--cifar100-c ...`` for CIFAR-100-C); read with :func:`load_cifar10c`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import atomic_save_npy, atomic_write_json
from harness.data import corruptions as C
from harness.data import datasets as D
from harness.data.cache import DataError, Dataset, array_sha256, open_arrays, read_manifest, spec_of
from harness.data.datasets import DatasetSpec

# CIFAR-10-C's (every function takes a `dataset`)
C_DIR = D.CIFAR10.c_dir
MANIFEST = "manifest.json"
FORMAT = 1
ZENODO_RECORD = D.CIFAR10.c_zenodo_record
ZENODO_API = D.CIFAR10.c_zenodo_api
ZENODO_TAR = D.CIFAR10.c_zenodo_tar
DOWNLOAD_TIMEOUT_S = 60

Log = Callable[[str], None]


def c_dir(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> Path:
    return Path(root).expanduser() / spec_of(dataset).c_dir


def prepare_hint(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> str:
    flag = spec_of(dataset).c_flag
    return (f"run `python -m harness.data prepare --root {Path(root).expanduser()} --{flag} generate` "
            f"(or `--{flag} official` / `--{flag} dir:PATH` for the published arrays)")


def read_c_manifest(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, Any] | None:
    path = c_dir(root, dataset) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("corruptions"), dict):
            raise ValueError("not format 1")
        return manifest
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"unreadable {path} ({e}): {prepare_hint(root, dataset)} --force") from e


def _file_ok(path: Path, entry: dict, rows: int, check_hash: bool = True) -> bool:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    if array.dtype != np.uint8 or array.shape[0] != rows or array.shape[1:] not in ((32, 32, 3), ()):
        return False
    return not check_hash or array_sha256(array) == entry.get("sha256")


class _Cache:
    """The cifar10c (cifar100c) folder being written: the manifest is rewritten after every file, so
    an interrupted prepare keeps what it finished."""

    def __init__(self, root: Path, n: int, force: bool, log: Log, spec: DatasetSpec = D.CIFAR10):
        self.dir, self.log = c_dir(root, spec), log
        self.dir.mkdir(parents=True, exist_ok=True)
        old = None if force else read_c_manifest(root, spec)
        if old is not None and old.get("images_per_severity") != n:
            raise DataError(f"{self.dir} holds {old.get('images_per_severity')} images per severity, this prepare "
                            f"makes {n}: add --force to rebuild it (or use another --root)")
        self.manifest = old or {"format": FORMAT, "dataset": spec.name, "images_per_severity": n, "corruptions": {}}

    @property
    def n(self) -> int:
        return self.manifest["images_per_severity"]

    def valid(self, name: str) -> bool:
        entry = self.manifest["corruptions"].get(name)
        return entry is not None and _file_ok(self.dir / f"{name}.npy", entry, 5 * self.n)

    def put(self, name: str, array: np.ndarray, entry: dict) -> None:
        array = np.ascontiguousarray(array)
        if array.shape != (5 * self.n, 32, 32, 3) or array.dtype != np.uint8:
            raise DataError(f"{name}: {array.dtype}{list(array.shape)}, expected uint8[{5 * self.n}, 32, 32, 3]")
        atomic_save_npy(self.dir / f"{name}.npy", array)
        self.manifest["corruptions"][name] = {**entry, "sha256": array_sha256(array),
                                              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.save()

    def put_labels(self, labels: np.ndarray) -> None:
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        old = self.manifest.get("labels_sha256")
        if old and old != array_sha256(labels) and self.manifest["corruptions"]:
            raise DataError(f"{self.dir}: labels differ from those of the corruptions already there: add --force")
        atomic_save_npy(self.dir / "labels.npy", labels)
        self.manifest["labels_sha256"] = array_sha256(labels)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.dir / MANIFEST, self.manifest)


def _test_set(root: Path, n: int | None, spec: DatasetSpec = D.CIFAR10) -> tuple[np.ndarray, np.ndarray, str]:
    manifest = read_manifest(root, spec)
    arrays = open_arrays(root, manifest)
    x, y = arrays["x_test"], arrays["y_test"]
    n = len(x) if n is None else n
    if not 1 <= n <= len(x):
        raise DataError(f"--{spec.c_flag}-limit {n}: the cached test set has {len(x)} images")
    return np.asarray(x[:n]), np.asarray(y[:n]), manifest["files"]["x_test.npy"]["sha256"]


def _read_frost(folder: str | os.PathLike[str], log: Log) -> tuple[list[np.ndarray], dict]:
    """The frost photographs of `folder` and where they came from (folder, SHA-256, whether they
    are the reference's); DataError when one is missing or unreadable."""
    folder = Path(folder).expanduser().resolve()
    try:
        photos = C.read_frost_photos(folder)
    except (OSError, ValueError) as e:  # missing file; Pillow's UnidentifiedImageError is an OSError
        raise DataError(f"--frost-dir {folder}: {e}") from e
    sha = {f: _sha256_file(folder / f) for f in C.FROST_DRAWN}
    reference = all(sha[f] == C.REFERENCE_FROST_SHA256[f] for f in sha)
    if not reference:
        log(f"frost: the photographs in {folder} are not the reference's (SHA-256 differs): "
            "frost will follow them, not the published distribution")
    return photos, {"folder": str(folder), "sha256": sha, "reference_photos": reference}


def _approximation(name: str, frost_photos: dict | None) -> dict:
    """The manifest's note on how close a generated corruption is to the published one."""
    fidelity, random, reason = C.FIDELITY[name]
    if frost_photos is not None and not frost_photos["reference_photos"]:
        fidelity, reason = C.DISTRIBUTION, C.FOREIGN_FROST
    return {"fidelity": fidelity, "random": random, "reason": reason}


def generate(root: str | os.PathLike[str], *, seed: int = 0, limit: int | None = None,
             names: Sequence[str] = C.ALL, frost_dir: str | os.PathLike[str] | None = None,
             force: bool = False, log: Log = print, dataset: Dataset = D.DEFAULT) -> dict:
    """Generate every corruption that can be made (frost too, from the photographs in `frost_dir`)
    of the first `limit` (all) cached test images of `dataset` at the five severities; corruptions
    already valid in the cache are kept. Returns the manifest."""
    spec = spec_of(dataset)
    root = Path(root).expanduser().resolve()
    photos, frost_source = _read_frost(frost_dir, log) if frost_dir else (None, None)
    x, y, test_sha = _test_set(root, limit, spec)
    cache = _Cache(root, len(x), force, log, spec)
    cache.put_labels(np.tile(y, 5))
    for name in names:
        if name in C.UNAVAILABLE and not (name == "frost" and photos):
            log(f"{name}: not generated ({C.UNAVAILABLE[name]})")
            continue
        if cache.valid(name):
            entry = cache.manifest["corruptions"][name]
            earlier = entry["source"] == "generated" and "approximation" not in entry
            log(f"{name}: already in the cache ({entry['source']}), kept"
                + (" (made by an earlier generator, without an approximation note: --force remakes it)" if earlier else ""))
            continue
        start = time.perf_counter()
        array = np.concatenate([C.corrupt(name, x, s, seed, frost_photos=photos) for s in C.SEVERITIES])
        source = frost_source if name == "frost" else None
        cache.put(name, array, {"source": "generated", "seed": seed, "generator": "harness.data.corruptions",
                                "test_images_sha256": test_sha, "approximation": _approximation(name, source),
                                **({"frost_photos": source} if source else {})})
        log(f"{name}: generated {len(array)} images in {time.perf_counter() - start:.1f} s")
    cache.manifest["fidelity_levels"] = C.FIDELITY_LEVELS
    cache.manifest["unavailable"] = {k: v for k, v in C.UNAVAILABLE.items() if k not in cache.manifest["corruptions"]}
    cache.save()
    return cache.manifest


def import_dir(root: str | os.PathLike[str], folder: str | os.PathLike[str], *, force: bool = False,
               label: str = "dir", log: Log = print, dataset: Dataset = D.DEFAULT) -> dict:
    """Take the published `.npy` files (any of the 19 and `labels.npy`) from `folder` (or its
    CIFAR-10-C/ or CIFAR-100-C/ subfolder, as the dataset's release unpacks) as source `official`."""
    spec = spec_of(dataset)
    folder = Path(folder).expanduser().resolve()
    if (folder / spec.c_release_dir).is_dir():
        folder = folder / spec.c_release_dir
    if not (folder / "labels.npy").is_file():
        raise DataError(f"{folder}: no labels.npy (expected the {spec.c_title} release: <corruption>.npy and labels.npy)")
    labels = np.load(folder / "labels.npy", allow_pickle=False)
    top = spec.num_classes - 1
    if labels.ndim != 1 or len(labels) % 5 or labels.min(initial=0) < 0 or labels.max(initial=0) > top:
        raise DataError(f"{folder}/labels.npy: shape {labels.shape}, labels {labels.min(initial=0)}..{labels.max(initial=0)}, "
                        f"expected (5·N,) labels 0..{top} ({spec.c_title})")
    cache = _Cache(Path(root).expanduser().resolve(), len(labels) // 5, force, log, spec)
    cache.put_labels(labels)
    found = [n for n in C.ALL if (folder / f"{n}.npy").is_file()]
    if not found:
        raise DataError(f"{folder}: none of the 19 <corruption>.npy files")
    for name in found:
        array = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        cache.put(name, array, {"source": "official", "from": f"{label}:{folder}",
                                "file_sha256": _sha256_file(folder / f"{name}.npy")})
        log(f"{name}: taken from {folder} (official)")
    missing = [n for n in C.ALL if n not in found]
    if missing:
        log(f"not in {folder}: {', '.join(missing)}")
    return cache.manifest


def _sha256_file(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_official(root: str | os.PathLike[str], *, force: bool = False, log: Log = print,
                   dataset: Dataset = D.DEFAULT) -> dict:
    """Download the release from Zenodo, check it against the md5 Zenodo lists for it, unpack and
    import it. Raises DataError with the reason when the network or the checksum refuses."""
    spec = spec_of(dataset)
    root = Path(root).expanduser().resolve()
    try:
        with urllib.request.urlopen(spec.c_zenodo_api, timeout=DOWNLOAD_TIMEOUT_S) as r:
            record = json.load(r)
        entry = next(f for f in record["files"] if f["key"] == spec.c_tar)
        algorithm, expected = entry["checksum"].split(":", 1)
    except Exception as e:  # network refused, proxy, unexpected record
        raise DataError(f"official: cannot reach Zenodo record {spec.c_zenodo_record} ({type(e).__name__}: {e}); "
                        f"download {spec.c_zenodo_tar} elsewhere, unpack it and use --{spec.c_flag} dir:PATH, "
                        f"or --{spec.c_flag} generate") from e
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.c_dir}-") as work:
        tar = Path(work) / spec.c_tar
        log(f"official: downloading {spec.c_zenodo_tar} ({spec.c_size})")
        try:
            with urllib.request.urlopen(spec.c_zenodo_tar, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tar, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 22)
        except Exception as e:
            raise DataError(f"official: download failed ({type(e).__name__}: {e})") from e
        got = _sha256_file(tar, algorithm)
        if got != expected:
            raise DataError(f"official: {algorithm} of the download is {got}, Zenodo lists {expected}")
        with tarfile.open(tar) as t:
            t.extractall(work, filter="data")
        return import_dir(root, Path(work) / spec.c_release_dir, force=force, label="zenodo", log=log, dataset=spec)


def prepare_c(root: str | os.PathLike[str], mode: str, *, limit: int | None = None, seed: int = 0,
              frost_dir: str | os.PathLike[str] | None = None, force: bool = False, log: Log = print,
              dataset: Dataset = D.DEFAULT) -> int:
    """The CLI's `--cifar10-c MODE` / `--cifar100-c MODE` (and `--frost-dir`): 0 when the cache
    holds the corruptions, 1 when it failed."""
    spec = spec_of(dataset)
    try:
        if mode == "generate":
            manifest = generate(root, seed=seed, limit=limit, frost_dir=frost_dir, force=force, log=log, dataset=spec)
        elif mode == "official":
            manifest = fetch_official(root, force=force, log=log, dataset=spec)
        elif mode.startswith("dir:"):
            manifest = import_dir(root, mode[4:], force=force, log=log, dataset=spec)
        else:
            raise DataError(f"--{spec.c_flag} {mode!r}: expected generate, official or dir:PATH")
    except DataError as e:
        log(f"{spec.c_flag}: {e}")
        return 1
    sources = {}
    for name, entry in manifest["corruptions"].items():
        sources.setdefault(entry["source"], []).append(name)
    log(f"{spec.c_flag}: {c_dir(root, spec)} holds {len(manifest['corruptions'])} corruptions × 5 severities × "
        f"{manifest['images_per_severity']} images ("
        + "; ".join(f"{k}: {len(v)}" for k, v in sorted(sources.items())) + ")")
    return 0


def available(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, dict]:
    """Corruption name → manifest entry of what the cache holds (empty when there is none)."""
    manifest = read_c_manifest(root, dataset)
    return dict(manifest["corruptions"]) if manifest else {}


def verify_c(root: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> dict[str, Any] | None:
    """Re-hash every CIFAR-10-C (CIFAR-100-C) array and the labels against the manifest; the
    manifest, or None where there is no such cache. Raises DataError naming each file that does
    not match."""
    manifest = read_c_manifest(root, dataset)
    if manifest is None:
        return None
    folder = c_dir(root, dataset)
    rows = 5 * manifest["images_per_severity"]
    bad = [f"{name}.npy" for name, entry in manifest["corruptions"].items()
           if not _file_ok(folder / f"{name}.npy", entry, rows)]
    labels = folder / "labels.npy"
    if not _file_ok(labels, {"sha256": manifest.get("labels_sha256")}, rows):
        bad.append(labels.name)
    if bad:
        raise DataError(f"{folder}: {', '.join(bad)} missing or not matching the manifest: "
                        f"{prepare_hint(root, dataset)} --force")
    return manifest


def load_cifar10c(root: str | os.PathLike[str], corruptions: str | Sequence[str] = "all",
                  severities: Sequence[int] = C.SEVERITIES, limit: int | None = None,
                  dataset: Dataset = D.DEFAULT) -> Iterator[tuple[str, int, np.ndarray, np.ndarray, str]]:
    """(name, severity, images uint8 NHWC, labels int64, source) for each requested corruption ×
    severity, in the order of the 19 names; `limit` takes the first images of each block.
    `dataset` cifar100 reads CIFAR-100-C (fine labels). Raises DataError (naming the prepare
    command) when something requested is not cached."""
    spec = spec_of(dataset)
    root_c = c_dir(root, spec)
    manifest = read_c_manifest(root, spec)
    if manifest is None:
        raise DataError(f"no {spec.c_title} cache at {root_c}: {prepare_hint(root, spec)}")
    held = manifest["corruptions"]
    names = [n for n in C.ALL if n in held] if corruptions == "all" else list(corruptions)
    missing = [n for n in names if n not in held]
    if missing:
        raise DataError(f"{spec.c_title} cache at {root_c} lacks {', '.join(missing)}: {prepare_hint(root, spec)}"
                        + ("" if set(missing) - set(C.UNAVAILABLE) else
                           f" (not made from the test images alone: {'; '.join(f'{n}: {C.UNAVAILABLE[n]}' for n in missing)})"))
    bad = [s for s in severities if s not in C.SEVERITIES]
    if bad:
        raise DataError(f"severities {bad}: must be in 1..5")
    n = manifest["images_per_severity"]
    take = n if limit is None else min(limit, n)
    labels = np.load(root_c / "labels.npy", mmap_mode="r", allow_pickle=False)
    for name in names:
        path = root_c / f"{name}.npy"
        if not _file_ok(path, held[name], 5 * n, check_hash=False):
            raise DataError(f"{path} is missing or malformed: {prepare_hint(root, spec)}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        for s in severities:
            rows = slice((s - 1) * n, (s - 1) * n + take)
            yield name, s, np.asarray(array[rows]), np.asarray(labels[rows], dtype=np.int64), held[name]["source"]
