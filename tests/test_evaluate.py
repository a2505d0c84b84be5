"""End-of-job metrics: ECE, NLL, confusion and agreement on constructed predictions."""
import contextlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from harness.run import evaluate
from harness.run.layout import GridPaths, JobPaths

PROBS = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.38, 0.62], [0.85, 0.15]])
LABELS = torch.tensor([0, 1, 1, 0])


def test_ece_by_hand():
    # bins of width 1/15: {0.95, 0.95} acc 0.5 -> 2/4·0.45; {0.62} acc 1 -> 1/4·0.38; {0.85} acc 1 -> 1/4·0.15
    assert evaluate.ece(PROBS, LABELS) == pytest.approx(100 * (0.225 + 0.095 + 0.0375))
    table = evaluate.reliability(PROBS, LABELS)
    assert len(table) == 15 and sum(b["count"] for b in table) == 4
    assert table[14] == {"count": 2, "confidence": pytest.approx(0.95), "accuracy": 0.5}
    assert evaluate.ece(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0  # confidence 1 is in the last bin


def test_nll_confusion_agreement():
    expected = -(math.log(0.95) + math.log(0.05) + math.log(0.62) + math.log(0.85)) / 4
    assert evaluate.nll(PROBS.log(), LABELS) == pytest.approx(expected, rel=1e-5)
    pred = PROBS.argmax(1)  # 0 0 1 0
    assert evaluate.confusion(pred, LABELS, 2) == [{"true": 0, "pred": 0, "count": 2},
                                                   {"true": 1, "pred": 0, "count": 1},
                                                   {"true": 1, "pred": 1, "count": 1}]
    assert evaluate.agreement(pred, torch.tensor([0, 1, 1, 1])) == 50.0
    assert evaluate.agreement(PROBS, PROBS) == 100.0


def test_job_metrics_of_a_student_with_two_teachers(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.randn(50, 4), torch.randint(0, 3, (50,))
    student = torch.nn.Linear(4, 3)
    t2 = torch.nn.Linear(4, 3)
    trainer = SimpleNamespace(model=student, data=SimpleNamespace(test=(images, labels), normalize=lambda x: x),
                              eval_batch_size=16, accelerator=SimpleNamespace(autocast=contextlib.nullcontext),
                              method=SimpleNamespace(teachers=[student, t2]))
    m = evaluate.job_metrics(trainer, tmp_path, ["same", "other"])
    each = json.loads(m["agreement_teachers"])
    assert each["same"] == 100.0 and 0 <= each["other"] <= 100
    with torch.no_grad():
        ens = (student(images).softmax(1) + t2(images).softmax(1)) / 2
        pred = student(images).argmax(1)
    assert m["agreement_ensemble"] == pytest.approx((ens.argmax(1) == pred).float().mean().item() * 100)
    cells = json.loads(JobPaths(tmp_path).confusion.read_text())
    assert sum(c["count"] for c in cells) == 50
    per_class = json.loads(m["test_per_class_top1"])
    assert len(per_class) == 3
    assert m["test_nll"] > 0 and 0 <= m["test_ece"] <= 100
    trainer.method = SimpleNamespace(teachers=[])
    assert "agreement_ensemble" not in evaluate.job_metrics(trainer, tmp_path)


def test_a_debug_grid_records_the_metrics_and_the_confusion_table(write_grid, tmp_path):
    import pyarrow.parquet as pq

    from harness.launch import main as launch

    out = tmp_path / "out"
    grid = GridPaths(out / "tiny")
    assert launch([str(write_grid(executor="debug")), "--out", str(out), "--set", "grid.method=['kd']",
                   "--set", "grid.seed=[3]", "--set", "train.epochs=1", "--set", "teachers.small.epochs=1"]) == 0
    teacher, student = sorted(pq.read_table(grid.runs_table).to_pylist(), key=lambda r: r["stage"] != "teacher")
    assert teacher["agreement_ensemble"] is None and teacher["test_nll"] > 0
    assert 0 <= student["agreement_ensemble"] <= 100 and list(json.loads(student["agreement_teachers"])) == ["small"]
    assert 0 <= student["test_ece"] <= 100 and len(json.loads(student["test_reliability"])) == 15
    confusion = pq.read_table(grid.confusion_table).to_pylist()
    for row in (teacher, student):
        cells = [c for c in confusion if c["job_key"] == row["job_key"]]
        right = sum(c["count"] for c in cells if c["true_class"] == c["pred_class"])
        assert right * 100 / sum(c["count"] for c in cells) == pytest.approx(row["test_top1"])
