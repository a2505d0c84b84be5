"""The method interface end to end: a new method is one file in `methods/`, found by discovery,
its declared parameters validated by the grid, its losses seeing the trainer's progress."""
from __future__ import annotations

import importlib
import sys

import pytest
import torch

import methods
from harness.config import grid as gridlib
from harness.config.grid import GridError
from harness.models import build_model, checkpoint
from harness.run.train import build_trainer, train_epoch
from methods import TERMS, Batch, Context, Outputs, Progress, build_method

# A logit-only KD whose weight warms up linearly over the first `warmup_epochs`: all a new method is.
WARM_KD = '''
"""`warmkd`: logit-only KD, its weight warmed up linearly from 0 over `warmup_epochs`."""
from methods.base import Param, Term, register
from methods.kd import kd_loss, soft_targets


@register
class WarmKD(Term):
    name = "warmkd"
    defaults = {"weight": Param(1.0, minimum=0), "temperature": Param(4.0, above=0),
                "warmup_epochs": Param(1.0, above=0)}
    uses_teachers = True

    def losses(self, batch, student, teachers):
        T, ramp = self.params["temperature"], min(1.0, self.progress.epoch_float / self.params["warmup_epochs"])
        loss = kd_loss(student.logits, soft_targets([t.logits for t in teachers], T), T)
        return {"warmkd": self.params["weight"] * ramp * loss}
'''

GRID = """
name = "g"
[teachers.r20]
arch = "resnet20"
[grid]
method = ["ce", "warmkd"]
seed = [0]
teacher_set = [["r20"]]
"""


@pytest.fixture
def warm_kd(tmp_path):
    """The module written into a folder added to the package path, discovered, and taken out again."""
    folder = tmp_path / "extra_methods"
    folder.mkdir()
    (folder / "throwaway_warmkd.py").write_text(WARM_KD)
    methods.__path__.append(str(folder))
    importlib.invalidate_caches()
    try:
        methods.discover()
        yield TERMS["warmkd"]
    finally:
        methods.__path__.remove(str(folder))
        TERMS.pop("warmkd", None)
        sys.modules.pop("methods.throwaway_warmkd", None)


def load(tmp_path, overrides=()):
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    return gridlib.load(path, list(overrides))


def test_a_new_file_is_a_method_the_grid_plans(tmp_path, warm_kd):
    plan = gridlib.plan(load(tmp_path, ["methods.warmkd.warmup_epochs=2.0"]))
    [job] = [j for j in plan.stage("student") if j.method == "warmkd"]
    assert job.config["method"] == {"terms": ["warmkd"],
                                    "params": {"warmkd": {"weight": 1.0, "temperature": 4.0, "warmup_epochs": 2.0}}}
    assert len(job.teachers) == 1  # uses_teachers: planned with the teacher set, after its teacher job


@pytest.mark.parametrize("override, path, fragment", [
    ("methods.warmkd.warmup_epochs=0.0", "methods.warmkd.warmup_epochs", "must be > 0, got 0.0"),
    ("methods.warmkd.weight=-1.0", "methods.warmkd.weight", "must be ≥ 0, got -1.0"),
    ("methods.warmkd.weight='big'", "methods.warmkd.weight", "expected float, got 'big'"),
    ("methods.warmkd.warmup=1.0", "methods.warmkd.warmup", "did you mean 'warmup_epochs'"),
])
def test_its_declared_parameters_are_validated(tmp_path, warm_kd, override, path, fragment):
    with pytest.raises(GridError) as info:
        load(tmp_path, [override])
    assert any(p == path and fragment in msg for p, msg in info.value.problems), info.value.problems


def test_a_term_built_by_hand_is_checked_against_the_declaration(warm_kd):
    with pytest.raises(ValueError, match="warmkd: warmup_epochs = 0: must be > 0"):
        warm_kd(Context(torch.nn.Identity(), [torch.nn.Identity()]), warmup_epochs=0)
    with pytest.raises(ValueError, match="warmkd needs at least one teacher"):
        warm_kd(Context(torch.nn.Identity()))


def test_the_term_sees_progress_through_the_method(warm_kd):
    torch.manual_seed(0)
    method = build_method({"terms": ["warmkd"], "params": {"warmkd": {"warmup_epochs": 1.0}}},
                          Context(torch.nn.Identity(), [torch.nn.Identity()]))
    assert [t.name for t in method.terms] == ["ce", "warmkd"]  # logit-only: plain ce is added
    batch, student = Batch(torch.zeros(4), torch.tensor([0, 1, 2, 3])), Outputs(torch.randn(4, 10), [])
    teachers = [Outputs(torch.randn(4, 10), [])]

    def loss_at(epoch, step):
        method.progress = Progress(epoch, step, steps_per_epoch=4, epochs=3)  # as the trainer sets it
        return method.losses(batch, student, teachers)["warmkd"].item()

    ramp = [loss_at(0, 0), loss_at(0, 1), loss_at(0, 2), loss_at(1, 0), loss_at(2, 3)]
    assert ramp[0] == 0 and ramp[1] > 0
    assert ramp[1:4] == pytest.approx([ramp[3] / 4, ramp[3] / 2, ramp[3]]) and ramp[4] == pytest.approx(ramp[3])


def test_the_trainer_sets_progress_each_step(tmp_path, cifar_root, warm_kd, monkeypatch):
    from harness.data import load_cifar10

    teacher = tmp_path / "teacher.pt"
    checkpoint.save_weights(teacher, "resnet20", build_model("resnet20"))
    recipe = {"epochs": 2, "batch_size": 8, "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
              "schedule": "constant", "milestones": [], "gamma": 0.1, "warmup_epochs": 0.0, "label_smoothing": 0.0,
              "mixed_precision": "no"}
    config = {"arch": "resnet20", "seed": 0, "recipe": recipe,
              "method": {"terms": ["warmkd"], "params": {"warmkd": dict(warm_kd.defaults)}}}
    cifar = load_cifar10(cifar_root, val_size=100, limit_train=10, limit_test=10)  # one step an epoch
    t = build_trainer(config, {"channels_last": False}, cifar, [("resnet20", str(teacher))])
    seen, losses = [], warm_kd.losses
    monkeypatch.setattr(warm_kd, "losses", lambda self, *a: seen.append(self.progress) or losses(self, *a))
    rows = [train_epoch(t, epoch) for epoch in range(2)]
    assert seen == [Progress(0, 0, 1, 2), Progress(1, 0, 1, 2)]
    assert rows[0]["loss_warmkd"] == 0 < rows[1]["loss_warmkd"]  # warmed up over the first epoch


def test_an_unknown_method_is_named_with_what_exists(tmp_path, warm_kd):
    with pytest.raises(GridError) as info:
        load(tmp_path, ["grid.method=['warmkdd']"])
    [(path, msg)] = info.value.problems
    assert path == "grid.method[0]" and "unknown method 'warmkdd'; did you mean 'warmkd'?" in msg
