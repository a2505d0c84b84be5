"""The teacher cache (harness.run.teacher_cache): built once under concurrency, corrupt or partial
caches detected and rebuilt, and `prepare` loading what a method needs onto the device."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import torch

from harness.models import checkpoint
from harness.run import teacher_cache
from harness.data.device import DeviceData
from harness.models import build_model
from tests.test_mate import blob_cifar

EXPECTED = {"format": teacher_cache.FORMAT, "teacher_key": "abc", "checkpoint_sha256": "0" * 64}


class Builder:
    """A stand-in build: counts its calls, takes a while, returns tiny arrays."""

    def __init__(self, delay: float = 0.0):
        self.calls, self.delay = 0, delay

    def __call__(self):
        self.calls += 1
        time.sleep(self.delay)
        return {"logits": np.arange(6, dtype=np.float16).reshape(3, 2),
                "cams": np.ones((3, 2, 4, 4), np.float16)}


def test_jobs_starting_together_build_it_once(tmp_path):
    folder, build = tmp_path / "cache" / "abc-123", Builder(delay=0.3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(teacher_cache.ensure(folder, EXPECTED, build)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1 and sorted(results) == [False, False, False, True]
    assert teacher_cache.problem(folder, EXPECTED) is None
    assert sorted(p.name for p in folder.parent.iterdir()) == ["abc-123", "abc-123.lock"]  # no temporaries left


def test_corrupt_partial_or_stale_caches_are_rebuilt(tmp_path):
    folder, build = tmp_path / "abc-123", Builder()
    assert teacher_cache.ensure(folder, EXPECTED, build) and build.calls == 1
    assert not teacher_cache.ensure(folder, EXPECTED, build) and build.calls == 1

    raw = bytearray((folder / "cams.npy").read_bytes())  # flip one byte of the data
    raw[-1] ^= 0xFF
    (folder / "cams.npy").write_bytes(bytes(raw))
    assert "SHA-256" in teacher_cache.problem(folder, EXPECTED)
    assert teacher_cache.ensure(folder, EXPECTED, build) and build.calls == 2

    (folder / "manifest.json").unlink()  # e.g. a copy that stopped half-way
    assert "partial" in teacher_cache.problem(folder, EXPECTED)
    assert teacher_cache.ensure(folder, EXPECTED, build) and build.calls == 3

    (folder / "logits.npy").write_bytes(b"not an array")
    assert "logits.npy" in teacher_cache.problem(folder, EXPECTED)
    assert teacher_cache.ensure(folder, EXPECTED, build) and build.calls == 4

    other = {**EXPECTED, "checkpoint_sha256": "1" * 64}  # the teacher's checkpoint changed
    assert "checkpoint_sha256" in teacher_cache.problem(folder, other)
    assert teacher_cache.ensure(folder, other, build) and build.calls == 5

    (tmp_path / ".abc-123.build-dead").mkdir()  # a builder that was killed
    (folder / "manifest.json").write_text("{")
    assert teacher_cache.problem(folder, other) == "unreadable manifest"
    assert teacher_cache.ensure(folder, other, build) and build.calls == 6
    assert not (tmp_path / ".abc-123.build-dead").exists()
    assert json.loads((folder / "manifest.json").read_text())["files"]["cams"]["shape"] == [3, 2, 4, 4]


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def broken():
        raise RuntimeError("out of memory")

    folder = tmp_path / "abc-123"
    try:
        teacher_cache.ensure(folder, EXPECTED, broken)
    except RuntimeError:
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["abc-123.lock"]


def test_prepare_builds_per_teacher_and_split_then_reuses(tmp_path):
    data = DeviceData(blob_cifar(40), torch.device("cpu"))
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    checkpoint.save_weights(path, "resnet20", build_model("resnet20"))
    model = checkpoint.load_frozen(path, "resnet20", torch.device("cpu"))
    lines = []
    args = (["key1"], [str(path)], [model], data)
    kwargs = dict(precision="no", autocast=lambda: torch.autocast("cpu", enabled=False), batch_size=16,
                  log=lines.append)
    (cache,) = teacher_cache.prepare(tmp_path / "tc", *args, data_config={"limit_train": 40}, **kwargs)
    assert cache.logits.shape == (40, 10) and cache.cams.shape == (40, 10, 8, 8) and cache.pad == 4
    assert cache.logits.dtype == torch.float16 and cache.cams.dtype == torch.float16
    with torch.no_grad():
        logits = model(data.probe_batch(40).images)
    torch.testing.assert_close(cache.logits.float(), logits, rtol=2e-3, atol=2e-3)
    assert len(lines) == 2 and "building" in lines[0]
    teacher_cache.prepare(tmp_path / "tc", *args, data_config={"limit_train": 40}, **kwargs)
    assert len(lines) == 2  # reused
    teacher_cache.prepare(tmp_path / "tc", *args, data_config={"limit_train": 40, "split_seed": 1}, **kwargs)
    assert len(lines) == 4 and len(list((tmp_path / "tc").glob("key1-*/manifest.json"))) == 2  # another split
