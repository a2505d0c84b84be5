"""Precision: `auto` resolves to what the hardware runs natively; emulated bf16 is refused."""
from __future__ import annotations

import pytest
import torch

from harness.config import precision
from tests.test_grid import BASE, load, problems


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def native(request, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_resolves_per_cpu_and_enters_the_plan(tmp_path, native):
    grid = load(tmp_path, BASE + '[teachers.r20]\narch = "resnet20"\nmixed_precision = "no"\n')
    expected = "bf16" if native else "no"
    assert grid["train"]["mixed_precision"] == expected
    assert grid["teachers"]["r56"]["mixed_precision"] is None  # inherits the resolved [train] value
    assert grid["teachers"]["r20"]["mixed_precision"] == "no"
    from harness.config import grid as gridlib

    plan = gridlib.plan(grid)
    assert {j.config["recipe"]["mixed_precision"] for j in plan.jobs} == {expected}


def test_explicit_bf16_on_an_emulating_cpu_is_refused_before_anything_runs(tmp_path, native):
    text = BASE + '[train]\nmixed_precision = "bf16"\n'
    if native:
        assert load(tmp_path, text)["train"]["mixed_precision"] == "bf16"
        return
    found = problems(tmp_path, text)
    assert found[0][0] == "train.mixed_precision" and "neither AVX-512 BF16 nor AMX" in found[0][1]
    with pytest.raises(ValueError, match="emulated"):
        precision.check("bf16", torch.device("cpu"))
    # a SLURM grid's jobs run elsewhere: they check their own node
    slurm = text + '[cluster]\nexecutor = "slurm"\n'
    assert load(tmp_path, slurm)["train"]["mixed_precision"] == "bf16"


def test_fp16_needs_a_gpu_in_the_job_too():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        precision.check("fp16", torch.device("cpu"))
    precision.check("no", torch.device("cpu"))


def test_auto_for_gpu_jobs_without_a_local_gpu_is_bf16():
    if torch.cuda.is_available():
        pytest.skip("a local GPU decides")
    assert precision.resolve("auto", on_gpu=True) == "bf16"
    assert precision.resolve("fp16", on_gpu=True) == "fp16"
