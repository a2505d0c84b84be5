"""Crash-safe file writes: a reader sees either the old file or the complete new one.

Each helper writes to a temporary file in the destination's directory (same filesystem, so the
final ``os.replace`` is atomic), fsyncs it, renames it over the destination, then fsyncs the
directory so the rename itself survives a power cut. A failed write leaves no temporary behind.
A file that is nonetheless not whole when read back (edited by hand, another program's) raises
`UnreadableFile`, which every command reports in one line (exit 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


class UnreadableFile(Exception):
    """A file the harness reads (results, weights) that is there but cannot be read: the message
    names it, says what is wrong and what rewrites it."""

__all__ = ["UnreadableFile", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_npy"]


@functools.cache
def _default_mode() -> int:
    # mkstemp creates 0600 files; give new files the mode open() would, i.e. 0666 minus umask.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY fsync on directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file; on clean exit it atomically becomes ``path``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mode = dest.stat().st_mode & 0o7777 if dest.exists() else _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically replace ``path`` with what ``writer`` writes to the binary file it is given."""
    with _atomic_file(path) as f:
        writer(f)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
                      sort_keys: bool = True) -> None:
    """Atomically replace ``path`` with ``obj`` as JSON (UTF-8, trailing newline)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically replace ``path`` with ``array`` in ``.npy`` format (never pickled)."""
    atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def open_append(path: str | os.PathLike[str]) -> IO[str]:
    """A text file opened for appending that is never a symbolic link: a link planted in the
    results folder could otherwise make the harness write anywhere."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    return os.fdopen(fd, "a", buffering=1)


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what a write killed half-way left behind (our temp files: `.<name>.*.tmp`); call it
    only where no other writer can be at work in `folder`."""
    leftovers = [p for p in Path(folder).glob(".*.tmp") if p.is_file() and not p.is_symlink()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers

