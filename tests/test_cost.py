"""The dry run's cost estimate: images per job × measured throughput, per stage and in all."""
from __future__ import annotations

import json

import pytest

from harness.config import cost, grid as gridlib
from harness.launch import main as launch

RATES = {"resnet20": 1000.0}  # the tiny grid's students and its teacher are all resnet20


@pytest.fixture
def table(tmp_path, monkeypatch):
    path = tmp_path / "throughput.json"
    monkeypatch.setattr(cost, "TABLE", path)
    cost.record("cpu", 128, RATES, {"device": "CPU Test (AVX2)", "precision": "no", "threads": 2,
                                     "measured": "2026-11-25"})
    return path


def test_a_recorded_batch_size_joins_its_device_and_a_new_device_starts_anew(table):
    about = {"device": "GPU", "precision": "bf16", "measured": "2026-11-25"}
    cost.record("cuda", 128, {"resnet20": 10.0}, about)
    cost.record("cuda", 64, {"resnet20": 6.0}, about)
    saved = json.loads(table.read_text())
    assert saved["cuda"]["images_per_s"] == {"128": {"resnet20": 10.0}, "64": {"resnet20": 6.0}}
    assert saved["cpu"]["images_per_s"] == {"128": RATES}  # other kinds untouched
    cost.record("cuda", 64, {"resnet20": 7.0}, {**about, "device": "GPU 2"})
    assert json.loads(table.read_text())["cuda"]["images_per_s"] == {"64": {"resnet20": 7.0}}


def test_a_job_is_costed_at_the_nearest_measured_batch_size():
    per_batch = {"128": {"a": 2.0}, "64": {"a": 1.0}}
    assert cost.nearest(per_batch, 64) == {"a": 1.0} and cost.nearest(per_batch, 256) == {"a": 2.0}
    assert cost.nearest(per_batch, 32) == {"a": 1.0} and cost.nearest(per_batch, 100) == {"a": 2.0}


def test_the_estimate_is_images_over_throughput(table, write_grid):
    plan = gridlib.plan(gridlib.load(write_grid()))
    train, val, forward = 300, 100, 1 / 3  # limit_train, val_size; a forward is a third of a step
    epochs = 3
    teacher = (epochs * train + epochs * val * forward) / 1000
    ce = teacher  # same arch, same recipe, no teacher forwards
    kd = ce + epochs * train * forward / 1000  # plus its teacher's forward on every training image
    assert cost.estimate(plan, plan.stage("teacher"), "cpu").seconds == pytest.approx(teacher)
    assert cost.estimate(plan, plan.stage("student"), "cpu").seconds == pytest.approx(2 * ce + 2 * kd)
    whole = cost.estimate(plan, kind="cpu")
    assert whole.seconds == pytest.approx(teacher + 2 * ce + 2 * kd) and whole.unknown == ()
    assert "CPU Test (AVX2)" in whole.device and cost.estimate(plan, kind="cuda") is None


def test_architectures_never_measured_are_named_not_guessed(table, write_grid):
    plan = gridlib.plan(gridlib.load(write_grid(), ["teachers.small.arch='resnet56'"]))
    whole = cost.estimate(plan, kind="cpu")
    assert whole.unknown == ("resnet56",)
    assert whole.seconds == pytest.approx(2 * (3 * 300 + 3 * 100 / 3) / 1000)  # the two ce students alone


def test_human_units():
    assert cost.human(3600 * 40, "cuda") == "≈ 40.0 GPU-hours"
    assert cost.human(3600 * 24 * 3.1, "cpu") == "≈ 3.1 CPU-days"


def test_the_dry_run_states_the_cost(table, write_grid, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cost, "device_kind", lambda grid: "cpu")  # as here, on a host with a GPU too
    assert launch([str(write_grid()), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "cost: ≈ 0.0 CPU-hours (teachers ≈ 0.0 CPU-hours, students ≈ 0.0 CPU-hours)" in text
    assert "measured on CPU Test (AVX2) (no, 2 threads, batch 128, measured 2026-11-25)" in text
    assert not (tmp_path / "out").exists()


def test_the_shipped_table_names_its_devices():
    for kind, entry in cost.measured().items():
        assert kind in ("cpu", "cuda") and entry["device"] and entry["command"].startswith("python -m harness.bench")
        assert all(rate > 0 for rates in entry["images_per_s"].values() for rate in rates.values())
