"""The CIFAR-100 benchmark grid, shrunk (one pair, one seed, two epochs on tiny generated data, the
debug executor: in-process), plans, trains, collects and reports like a CIFAR-10 one."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from harness.analysis import report
from harness.launch import main as launch
from harness.models import checkpoint
from harness.run.layout import GridPaths, State

ROOT = Path(__file__).resolve().parents[1]
SHRINK = ["grid.seed=[0]", "train.epochs=2", "data.val_size=100", "data.limit_train=200", "data.limit_test=200",
          "methods.dkd.warmup_epochs=1", "cluster.executor='debug'"]


def shrunk_benchmark(data_root: Path) -> str:
    """grids/cifar100.toml with one of its four pairs (resnet56 → resnet20), on the test data."""
    text = (ROOT / "grids" / "cifar100.toml").read_text()
    for student in ("resnet8x4", "wrn_16_2", "vgg8"):
        text = re.sub(rf"\[students\.{student}\]\n(.+\n)+\n", "", text)
    return text.replace('root = "~/data"', f'root = "{data_root}"')


@pytest.fixture(scope="module")
def finished(cifar100_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("c100")
    path = tmp / "cifar100.toml"
    path.write_text(shrunk_benchmark(cifar100_root))
    assert launch([str(path), "--out", str(tmp / "out"), *(a for s in SHRINK for a in ("--set", s))]) == 0
    return tmp / "out" / "cifar100"


def test_every_job_completes_on_cifar100(finished):
    runs = pq.read_table(finished / "runs.parquet").to_pylist()
    assert sorted((r["stage"], r["method"], r["arch"]) for r in runs) == [
        ("student", m, "resnet20") for m in sorted(["ce", "kd", "kd_std", "dkd", "dist", "kd+at"])] + [
        ("teacher", "ce", "resnet56")]
    assert {r["status"] for r in runs} == {State.COMPLETED} and {r["dataset"] for r in runs} == {"cifar100"}
    for r in runs:
        assert len(json.loads(r["test_per_class_top1"])) == 100  # 2 test images per class
        assert 0 <= r["test_top1"] <= 100


def test_models_have_a_hundred_outputs_and_dkd_warms_up(finished):
    grid = GridPaths(finished)
    runs = {r["method"]: r for r in pq.read_table(finished / "runs.parquet").to_pylist() if r["stage"] == "student"}
    assert json.loads(runs["dkd"]["config_json"])["method"]["params"]["dkd"]["beta"] == 2.0  # the pair's β
    state = checkpoint.load(grid.job(runs["dkd"]["job_key"]).model)["state_dict"]
    assert state["fc.weight"].shape == torch.Size([100, 64])
    epochs = [r for r in pq.read_table(finished / "epochs.parquet").to_pylist() if r["job_key"] == runs["dkd"]["job_key"]]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(e["loss_nckd"] is not None for e in epochs)
    confusion = pq.read_table(finished / "confusion.parquet").to_pylist()
    assert max(c["true_class"] for c in confusion) >= 90  # the high classes are there, not folded into 10


def test_the_report_names_the_cifar100_rows(finished, capsys):
    assert report.main([str(finished)]) == 0
    text = (finished / "report" / "report.md").read_text()
    assert "| resnet20 | dkd | resnet56 |" in text and "| resnet20 | dist | resnet56 |" in text
    assert "C100-C (%)" in text and "CIFAR-100-C: no CIFAR-100-C evaluation" in text and "CIFAR-10-C" not in text
    assert (finished / "report" / "confusion.png").is_file()
