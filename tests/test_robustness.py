"""CIFAR-10-C end to end: the cache (generated, official-format folder), the loader, the grid's
[eval] section, per-job robustness.json and robustness.parquet."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from harness.data import DataError
from harness.data import corruptions as C
from harness.data.__main__ import main as data_main
from harness.data.cifar10c import c_dir, load_cifar10c, read_c_manifest
from harness.run.layout import GridPaths

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


def test_generated_entries_carry_their_approximation_note(c_root):
    manifest = read_c_manifest(c_root)
    assert set(manifest["fidelity_levels"]) == {"exact", "distribution"}
    for name, entry in manifest["corruptions"].items():
        note = entry["approximation"]
        fidelity, random, reason = C.FIDELITY[name]
        assert note == {"fidelity": fidelity, "random": random, "reason": reason}
    assert manifest["corruptions"]["contrast"]["approximation"]["random"] is False
    assert manifest["corruptions"]["gaussian_noise"]["approximation"]["random"] is True
    assert "frost" in manifest["unavailable"] and "--frost-dir" in manifest["unavailable"]["frost"]


def write_frost_photos(folder, sizes=((200, 300), (170, 210), (180, 250), (240, 300), (175, 200))):
    """Stand-ins for the reference's photographs (not shipped): the names it reads, odd sizes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in zip(C.FROST_DRAWN, sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_frost_dir_generates_frost_and_records_the_photographs(cifar_root, tmp_path, capsys):
    import hashlib

    root = tmp_path / "data"
    shutil.copytree(cifar_root / "cifar10", root / "cifar10")
    photos = write_frost_photos(tmp_path / "frost")
    args = ["prepare", "--root", str(root), "--cifar10-c", "generate", "--cifar10-c-limit", "4"]
    assert data_main(args + ["--frost-dir", str(photos)]) == 0
    assert "not the reference's" in capsys.readouterr().out
    entry = read_c_manifest(root)["corruptions"]["frost"]
    assert entry["frost_photos"]["folder"] == str(photos.resolve())
    assert entry["frost_photos"]["sha256"] == {f: hashlib.sha256((photos / f).read_bytes()).hexdigest()
                                               for f in C.FROST_DRAWN}
    assert entry["frost_photos"]["reference_photos"] is False
    assert entry["approximation"]["fidelity"] == "distribution"
    test = np.load(root / "cifar10" / "x_test.npy")[:4]
    (name, sev, images, labels, source), = load_cifar10c(root, ["frost"], [2])
    np.testing.assert_array_equal(images, C.corrupt("frost", test, 2, 0, frost_photos=C.read_frost_photos(photos)))
    assert "frost" not in read_c_manifest(root)["unavailable"]


def test_frost_dir_is_refused_without_generate_or_photographs(tmp_path, cifar_root, capsys):
    with pytest.raises(SystemExit) as e:
        data_main(["prepare", "--root", str(tmp_path), "--cifar10-c", "official", "--frost-dir", str(tmp_path)])
    assert e.value.code == 2 and "--frost-dir goes with --cifar10-c generate" in capsys.readouterr().err
    root = tmp_path / "data"
    shutil.copytree(cifar_root / "cifar10", root / "cifar10")
    (tmp_path / "empty").mkdir()
    assert data_main(["prepare", "--root", str(root), "--cifar10-c", "generate", "--cifar10-c-limit", "4",
                      "--frost-dir", str(tmp_path / "empty")]) == 1
    assert "no frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg" in capsys.readouterr().out


def test_eval_section_is_validated_and_stays_out_of_the_key(tmp_path, c_root):
    from harness.config import grid as gridlib
    from tests.conftest import TINY_GRID

    base = TINY_GRID.format(root=c_root, executor="debug")
    path = tmp_path / "g.toml"
    path.write_text(base + '[eval]\ncorruptions = ["fgo", "contrast"]\nseverities = [1, 6]\n')
    with pytest.raises(gridlib.GridError) as e:
        gridlib.load(path)
    text = str(e.value)
    assert "eval.corruptions[0]: unknown corruption 'fgo'; did you mean 'fog'?" in text
    assert "eval.severities: must be ≤ 5, got [1, 6]" in text
    path.write_text(base)
    plain = gridlib.plan(gridlib.load(path))
    path.write_text(base + '[eval]\ncorruptions = "all"\nlimit = 4\n')
    evaluated = gridlib.plan(gridlib.load(path))
    assert [j.key for j in plain.jobs] == [j.key for j in evaluated.jobs]
    assert evaluated.jobs[0].runtime["eval"] == {"corruptions": "all", "severities": [1, 2, 3, 4, 5], "limit": 4}
    assert plain.jobs[0].runtime["eval"]["corruptions"] == []


def test_tiny_grid_lands_rows_in_robustness_parquet(tmp_path, c_root):
    import pyarrow.parquet as pq

    from harness.launch import main as launch
    from tests.conftest import TINY_GRID

    path = tmp_path / "g.toml"
    path.write_text(TINY_GRID.format(root=c_root, executor="debug").replace("epochs = 3", "epochs = 1")
                    + '[eval]\ncorruptions = ["contrast", "gaussian_noise", "saturate"]\nseverities = [1, 5]\n')
    out = tmp_path / "out"
    assert launch([str(path), "--out", str(out), "--set", "grid.method=['ce']", "--set", "grid.seed=[0]"]) == 0
    grid = GridPaths(out / "tiny")
    runs = pq.read_table(grid.runs_table).to_pylist()
    rows = pq.read_table(grid.robustness_table).to_pylist()
    (run,) = runs
    job = grid.job(run["job_key"])
    assert sorted((r["corruption"], r["severity"]) for r in rows) == [
        ("contrast", 1), ("contrast", 5), ("gaussian_noise", 1), ("gaussian_noise", 5), ("saturate", 1), ("saturate", 5)]
    assert all(r["job_key"] == run["job_key"] and r["n"] == N and r["corruption_source"] == "generated"
               and 0 <= r["top1"] <= 100 for r in rows)
    standard = [r["top1"] for r in rows if r["corruption"] != "saturate"]
    assert run["cifar10c_mean_top1"] == pytest.approx(sum(standard) / len(standard))
    assert run["cifar10c_mean_over"].startswith("2/15 standard corruptions, severities 1,5, source generated")
    assert run["robustness_eval_s"] > 0
    assert run["cifar10c_images"] == N  # the clean top-1 on those same N test images, beside the corrupted
    from harness.models import checkpoint
    from harness.data import load_cifar10
    from harness.data.device import DeviceData
    from harness.run.evaluate import predict

    model = checkpoint.load_frozen(job.model, "resnet20", torch.device("cpu"), torch.contiguous_format)
    data = DeviceData(load_cifar10(c_root, val_size=100), torch.device("cpu"))
    from harness.data.cache import open_arrays, read_manifest
    arrays = open_arrays(c_root, read_manifest(c_root))
    x, y = torch.from_numpy(np.array(arrays["x_test"][:N])), torch.from_numpy(np.array(arrays["y_test"][:N]))
    clean = 100 * (predict(model, x, data.normalize, 1000).argmax(1) == y).float().mean().item()
    assert run["cifar10c_clean_top1"] == pytest.approx(clean, abs=1e-6)
    assert run["cpu_hours"] > 0
    saved = json.loads(job.robustness.read_text())
    assert len(saved["rows"]) == 6 and saved["robustness_eval_s"] == run["robustness_eval_s"]


def test_launch_refuses_eval_the_cache_cannot_serve(tmp_path, c_root, capsys):
    from harness.launch import main as launch
    from tests.conftest import TINY_GRID

    path = tmp_path / "g.toml"
    path.write_text(TINY_GRID.format(root=c_root, executor="debug") + '[eval]\ncorruptions = ["motion_blur"]\n')
    assert launch([str(path), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert "lacks motion_blur" in out and "--cifar10-c" in out
    assert not GridPaths(tmp_path / "out" / "tiny").jobs.exists()


def test_a_job_started_by_hand_checks_its_eval_data_before_training(tmp_path, cifar_root):
    """launch refuses a grid whose CIFAR-10-C is missing; `python -m harness.job` on a planned folder
    (another machine, data not copied) fails before its first epoch, not after the last."""
    from harness.run import job as job_module
    from tests.conftest import TINY_GRID, planned_jobs

    path = tmp_path / "g.toml"
    path.write_text(TINY_GRID.format(root=cifar_root, executor="local") + '[eval]\ncorruptions = ["contrast"]\n')
    (job,) = planned_jobs(path, tmp_path / "out", "--set", "grid.method=['ce']", "--set", "grid.seed=[0]")
    folder = job.folder  # cifar_root has no CIFAR-10-C
    result = job_module.run(folder)
    assert result["status"] == "failed" and "[eval] corruptions: no CIFAR-10-C cache" in result["error"]
    assert "--cifar10-c generate" in result["error"]
    assert not (folder / "epochs.json").exists() and not (folder / "checkpoint.pt").exists()


def test_data_verify_rehashes_cifar10c(tmp_path, c_root, capsys):
    root = tmp_path / "root"
    shutil.copytree(c_root, root)
    assert data_main(["verify", "--root", str(root)]) == 0
    assert "cifar10c matches its manifest" in capsys.readouterr().out
    path = c_dir(root) / "fog.npy"
    array = np.load(path)
    array[3, 5, 7, 1] ^= 1  # one flipped bit in one pixel
    np.save(path, array)
    assert data_main(["verify", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "fog.npy" in err and "--cifar10-c generate" in err
