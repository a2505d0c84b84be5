"""CIFAR-10-C end to end: the cache (generated, official-format folder), the loader, the grid's
[eval] section, per-job robustness.json and robustness.parquet."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness.data import DataError
from harness.data import corruptions as C
from harness.data.__main__ import main as data_main
from harness.data.cifar10c import c_dir, load_cifar10c, read_c_manifest

N = 8  # images per severity in the generated test cache


@pytest.fixture(scope="session")
def c_root(cifar_root, tmp_path_factory):
    """The fake CIFAR-10 cache plus a generated CIFAR-10-C of its first N test images."""
    root = tmp_path_factory.mktemp("croot")
    shutil.copytree(cifar_root / "cifar10", root / "cifar10")
    assert data_main(["prepare", "--root", str(root), "--cifar10-c", "generate", "--cifar10-c-limit", str(N)]) == 0
    return root


def test_generate_writes_the_official_format(c_root, capsys):
    manifest = read_c_manifest(c_root)
    assert manifest["images_per_severity"] == N
    assert set(manifest["corruptions"]) == set(C.AVAILABLE)
    assert set(manifest["unavailable"]) == set(C.UNAVAILABLE)
    test = np.load(c_root / "cifar10" / "x_test.npy")[:N]
    labels = np.load(c_dir(c_root) / "labels.npy")
    np.testing.assert_array_equal(labels, np.tile(np.load(c_root / "cifar10" / "y_test.npy")[:N], 5))
    for name, entry in manifest["corruptions"].items():
        array = np.load(c_dir(c_root) / f"{name}.npy")
        assert array.shape == (5 * N, 32, 32, 3) and array.dtype == np.uint8
        assert entry["source"] == "generated" and entry["seed"] == 0
        np.testing.assert_array_equal(array[2 * N:3 * N], C.corrupt(name, test, 3, 0))  # severity 3 rows
    # a second prepare keeps the valid files
    before = {p.name: p.stat().st_mtime_ns for p in c_dir(c_root).glob("*.npy") if p.name != "labels.npy"}
    assert data_main(["prepare", "--root", str(c_root), "--cifar10-c", "generate", "--cifar10-c-limit", str(N)]) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in c_dir(c_root).glob("*.npy") if p.name != "labels.npy"}


def test_loader_blocks_and_limit(c_root):
    rows = list(load_cifar10c(c_root, ["contrast", "fog"], [1, 5], limit=3))
    assert [(n, s) for n, s, *_ in rows] == [("contrast", 1), ("contrast", 5), ("fog", 1), ("fog", 5)]
    full = np.load(c_dir(c_root) / "contrast.npy")
    name, sev, images, labels, source = rows[1]
    np.testing.assert_array_equal(images, full[4 * N:4 * N + 3])
    assert labels.dtype == np.int64 and len(labels) == 3 and source == "generated"
    assert [n for n, s, *_ in load_cifar10c(c_root, "all", [1])] == list(C.AVAILABLE)


def test_loader_errors_name_the_prepare_command(tmp_path, c_root):
    with pytest.raises(DataError, match="--cifar10-c generate"):
        next(load_cifar10c(tmp_path, "all"))
    with pytest.raises(DataError, match="lacks motion_blur.*ImageMagick"):
        next(load_cifar10c(c_root, ["motion_blur"]))


def test_official_folder_is_imported_as_official(tmp_path, capsys):
    release = tmp_path / "release" / "CIFAR-10-C"
    release.mkdir(parents=True)
    rng = np.random.default_rng(0)
    fog = rng.integers(0, 256, (5 * 4, 32, 32, 3), dtype=np.uint8)
    np.save(release / "fog.npy", fog)
    np.save(release / "labels.npy", np.tile(np.arange(4, dtype=np.uint8), 5))
    root = tmp_path / "data"
    assert data_main(["prepare", "--root", str(root), "--cifar10-c", f"dir:{tmp_path / 'release'}"]) == 0
    assert "not in" in capsys.readouterr().out  # names the 18 missing ones
    (name, sev, images, labels, source), = load_cifar10c(root, ["fog"], [2])
    np.testing.assert_array_equal(images, fog[4:8])
    np.testing.assert_array_equal(labels, np.arange(4))
    assert source == "official" and read_c_manifest(root)["corruptions"]["fog"]["source"] == "official"


def test_official_download_reports_the_refusal(tmp_path, monkeypatch, capsys):
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert data_main(["prepare", "--root", str(tmp_path), "--cifar10-c", "official"]) == 1
    out = capsys.readouterr().out
    assert "cannot reach Zenodo record 2535967" in out and "dir:PATH" in out
