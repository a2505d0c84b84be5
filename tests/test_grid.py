"""Grid files: validation of bad input, expansion, and job keys."""
from __future__ import annotations

import copy

import pytest

from harness.config import grid as gridlib
from harness.config.grid import GridError, job_key
from harness.launch import main as launch

BASE = """
name = "g"
[teachers.r56]
arch = "resnet56"
[teachers.r110]
arch = "resnet110"
[grid]
method = ["ce", "kd"]
seed = [0, 1, 2]
teacher_set = [["r56"], ["r56", "r110"]]
"""


def load(tmp_path, text=BASE, overrides=(), cuda=False):
    path = tmp_path / "g.toml"
    path.write_text(text)
    return gridlib.load(path, list(overrides), cuda_available=cuda)


def problems(tmp_path, text=BASE, overrides=(), cuda=False) -> list[tuple[str, str]]:
    with pytest.raises(GridError) as info:
        load(tmp_path, text, overrides, cuda)
    return info.value.problems


@pytest.mark.parametrize("override, path, fragment", [
    ("train.epoch=3", "train.epoch", "did you mean 'epochs'"),
    ("train.epochs='ten'", "train.epochs", "expected int"),
    ("train.epochs=0", "train.epochs", "must be ≥ 1"),
    ("train.arch='resnet21'", "train.arch", "allowed: 'resnet20', 'resnet32'"),
    ("train.schedule='cosin'", "train.schedule", "did you mean 'cosine'"),
    ("grid.method=['kd', 'kdd']", "grid.method[1]", "unknown method 'kdd'"),
    ("grid.seed=[]", "grid.seed", "empty axis"),
    ("grid.method=[]", "grid.method", "empty axis"),
    ("grid.teacher_set=[['r65']]", "grid.teacher_set[0]", "did you mean 'r56'"),
    ("grid.teacher_set=[[]]", "grid.teacher_set[0]", "empty teacher set"),
    ("grid.teacher_set=[]", "grid.teacher_set", "uses teachers"),
    ("teachers.r56.arch='resnet57'", "teachers.r56.arch", "did you mean 'resnet56'"),
    ("teachers.r56.lrr=0.1", "teachers.r56.lrr", "did you mean 'lr'"),
    ("train.lr=nan", "train.lr", "must be a finite number"),
    ("train.momentum=inf", "train.momentum", "must be a finite number"),
    ("train.milestones=[0.5, inf]", "train.milestones", "must be a finite number"),
    ("teachers.r56.warmup_epochs=nan", "teachers.r56.warmup_epochs", "must be a finite number"),
    ("teachers.r56.checkpoint='/no/such.pt'", "teachers.r56.checkpoint", "no such file"),
    ("methods.kd.temprature=2.0", "methods.kd.temprature", "did you mean 'temperature'"),
    ("methods.kd.alpha='high'", "methods.kd.alpha", "expected float"),
    ("cluster.executor='slurmm'", "cluster.executor", "allowed"),
    ("trian.epochs=3", "trian", "did you mean 'train'"),
    ("train.mixed_precision='fp16'", "train.mixed_precision", "needs a CUDA GPU"),
    ("train.nesterov=1", "train.nesterov", "expected bool"),
])
def test_bad_input_names_key_and_what_is_allowed(tmp_path, override, path, fragment):
    found = problems(tmp_path, overrides=[override])
    assert any(p == path and fragment in msg for p, msg in found), found


def test_all_problems_reported_at_once(tmp_path):
    found = problems(tmp_path, overrides=["train.epoch=3", "grid.seed=[]", "train.arch='x'"])
    assert {p for p, _ in found} == {"train.epoch", "grid.seed", "train.arch"}


def test_fp16_allowed_where_cuda_is(tmp_path):
    assert load(tmp_path, overrides=["train.mixed_precision='fp16'"], cuda=True)["train"]["mixed_precision"] == "fp16"


def test_not_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in problems(tmp_path, "name = \n")[0][1]
    with pytest.raises(GridError, match="no such file"):
        gridlib.load(tmp_path / "absent.toml")


def test_launch_bad_grid_exits_2_and_runs_nothing(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(BASE)
    code = launch([str(path), "--out", str(tmp_path / "out"), "--set", "train.epoch=3"])
    assert code == 2
    assert "train.epoch: unknown key; did you mean 'epochs'?" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_expansion_drops_redundant_and_adds_teachers_once(tmp_path):
    plan = gridlib.plan(load(tmp_path))
    students, teachers = plan.stage("student"), plan.stage("teacher")
    assert len([j for j in students if j.method == "ce"]) == 3  # ce does not vary with the teacher set
    assert len([j for j in students if j.method == "kd"]) == 6
    assert sorted(j.arch for j in teachers) == ["resnet110", "resnet56"]
    assert plan.jobs[:2] == teachers  # teachers first
    r56 = next(j.key for j in teachers if j.arch == "resnet56")
    assert all(r56 in j.teachers for j in students if j.method == "kd")
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)


def test_identical_teachers_under_two_names_are_one_job(tmp_path):
    text = BASE.replace('arch = "resnet110"', 'arch = "resnet56"')
    plan = gridlib.plan(load(tmp_path, text))
    assert len(plan.stage("teacher")) == 1


def test_teacher_recipe_overrides_train(tmp_path):
    plan = gridlib.plan(load(tmp_path, BASE + '[train]\nepochs = 30\n', ["teachers.r56.epochs=7"]))
    epochs = {j.arch: j.config["recipe"]["epochs"] for j in plan.jobs}
    assert epochs == {"resnet56": 7, "resnet110": 30, "resnet20": 30}


def test_unused_teacher_gets_no_job(tmp_path):
    plan = gridlib.plan(load(tmp_path, overrides=["grid.teacher_set=[['r56']]"]))
    assert [j.arch for j in plan.stage("teacher")] == ["resnet56"]


def test_method_variants_and_compositions(tmp_path):
    text = BASE + '[methods.kd]\ntemperature = 2.0\n[methods.soft]\nterms = ["kd"]\nalpha = 0.5\n'
    grid = load(tmp_path, text, ["grid.method=['kd', 'soft', 'kd+at']"])
    resolved = grid["resolved_methods"]
    kd = {"temperature": 2.0, "alpha": 0.9, "standardize": False, "teacher_cache": "off"}
    assert resolved["kd"]["params"]["kd"] == kd
    assert resolved["soft"]["params"]["kd"] == {**kd, "alpha": 0.5}
    assert resolved["kd+at"]["terms"] == ["kd", "at"]
    found = problems(tmp_path, BASE + '[methods.soft]\nterms = ["kd"]\nbeta = 1.0\n', ["grid.method=['soft']"])
    assert found[0][0] == "methods.soft.beta"


def test_a_variant_runs_with_its_own_teacher_sets(tmp_path):
    text = BASE + '[methods.avg]\nterms = ["kd"]\nteacher_sets = [["r56", "r110"]]\n'
    plan = gridlib.plan(load(tmp_path, text, ["grid.method=['kd', 'avg']", "grid.teacher_set=[['r56']]"]))
    sets = sorted({(j.method, j.teacher_set) for j in plan.stage("student")})
    assert sets == [("avg", "r56+r110"), ("kd", "r56")]
    assert sorted(j.arch for j in plan.stage("teacher")) == ["resnet110", "resnet56"]
    both = gridlib.plan(load(tmp_path, text, ["grid.method=['kd']", "grid.teacher_set=[['r56', 'r110']]"]))
    avg = next(j for j in plan.stage("student") if j.method == "avg")
    assert avg.key in {j.key for j in both.stage("student")}  # teacher_sets selects jobs: not in their keys
    found = problems(tmp_path, BASE + '[methods.avg]\nterms = ["kd"]\nteacher_sets = [["r111"]]\n', ["grid.method=['avg']"])
    assert found[0][0] == "methods.avg.teacher_sets[0]" and "did you mean 'r110'" in found[0][1]
    found = problems(tmp_path, text.replace('[["r56", "r110"]]', '"r56"'), ["grid.method=['avg']"])
    assert found[0] == ("methods.avg.teacher_sets", "expected list[list[str]], got 'r56'")


def test_key_is_stable_and_canonical():
    config = {"seed": 1, "recipe": {"lr": 0.1, "epochs": 3}}
    assert job_key(config) == job_key({"recipe": {"epochs": 3, "lr": 0.1}, "seed": 1})
    assert job_key(config) == "174f7fc0670301fd"  # fixed: keys must not change between releases
    assert len(job_key(config)) == 16


def test_key_sensitive_to_what_matters_and_blind_to_the_rest(tmp_path):
    def keys(*overrides):
        return [j.key for j in gridlib.plan(load(tmp_path, overrides=list(overrides))).jobs]

    base = keys()
    for changed in ("train.lr=0.05", "train.epochs=3", "methods.kd.alpha=0.5", "data.val_size=1000",
                    "teachers.r56.seed=1", "data.limit_train=200"):
        assert keys(changed) != base, changed
    on_slurm = "cluster.executor='slurm'"  # where an explicit bf16 is never refused by this host
    assert keys(on_slurm, "train.mixed_precision='no'") != keys(on_slurm, "train.mixed_precision='bf16'")
    for blind in ("data.root='/elsewhere'", "cluster.executor='debug'", "train.eval_batch_size=17",
                  "train.channels_last=false", "name='other'", "description='x'"):
        assert keys(blind) == base, blind


def test_teacher_change_changes_student_keys(tmp_path):
    plan_a = gridlib.plan(load(tmp_path))
    plan_b = gridlib.plan(load(tmp_path, overrides=["teachers.r56.epochs=5"]))
    kd = lambda plan: {j.key for j in plan.jobs if j.method == "kd" and len(j.teachers) == 1}
    ce = lambda plan: {j.key for j in plan.stage("student") if j.method == "ce"}
    assert kd(plan_a).isdisjoint(kd(plan_b)) and ce(plan_a) == ce(plan_b)


def test_external_checkpoint_teacher_keyed_by_content(tmp_path):
    import torch

    from harness.models import build_model

    def save_weights(seed):  # real weights: the plan loads an external teacher once to check it
        torch.manual_seed(seed)
        torch.save({"arch": "resnet56", "state_dict": build_model("resnet56").state_dict()}, weights)

    weights = tmp_path / "t.pt"
    save_weights(0)
    text = BASE + f'[teachers.ext]\narch = "resnet56"\ncheckpoint = "{weights}"\n'
    plan = gridlib.plan(load(tmp_path, text, ["grid.teacher_set=[['ext']]"]))
    assert plan.stage("teacher") == []
    (key,) = plan.external
    assert plan.external[key]["path"] == str(weights)
    save_weights(1)
    plan_b = gridlib.plan(load(tmp_path, text, ["grid.teacher_set=[['ext']]"]))
    assert set(plan_b.external) != {key}


def test_plan_record_round_trip(tmp_path):
    plan = gridlib.plan(load(tmp_path))
    jobs = gridlib.from_record(copy.deepcopy(gridlib.to_record(plan)))
    assert [(j.key, j.teachers, j.config) for j in jobs] == [(j.key, j.teachers, j.config) for j in plan.jobs]


def test_ten_thousand_job_grid_plans(tmp_path):
    grid = load(tmp_path, overrides=[f"grid.seed={list(range(2000))}"])
    assert len(gridlib.plan(grid).stage("student")) == 2000 * 3  # ce once, kd per teacher set


def test_slurm_signal_must_leave_time_to_train(tmp_path):
    found = problems(tmp_path, overrides=["cluster.executor='slurm'", "cluster.timeout_min=2", "cluster.signal_delay_s=90"])
    assert found[0][0] == "cluster.signal_delay_s" and "up to 60 s early" in found[0][1]
    assert load(tmp_path, overrides=["cluster.executor='slurm'", "cluster.timeout_min=3"])["cluster"]["signal_delay_s"] == 90


@pytest.mark.parametrize("method, options, fragment", [
    ("kd+mate", [], "kd and mate each supervise"),
    ("ce+kd", [], "ce and kd each supervise"),
    ("mate+at", ["methods.mate.teacher_cache='clean'"], "supplies cached teacher outputs without feature maps"),
])
def test_terms_that_cannot_compose_are_grid_errors(tmp_path, method, options, fragment):
    found = problems(tmp_path, overrides=[f"grid.method=['{method}']", *options])
    assert any(p == "grid.method[0]" and fragment in msg for p, msg in found), found


def test_ranks_one_per_gpu_and_an_even_share_of_each_batch(tmp_path):
    slurm = ["cluster.executor='slurm'"]
    found = problems(tmp_path, overrides=[*slurm, "cluster.gpus_per_job=1", "cluster.tasks_per_job=2"])
    assert found[0][0] == "cluster.tasks_per_job" and "one task per GPU" in found[0][1]
    found = problems(tmp_path, overrides=[*slurm, "cluster.tasks_per_job=3"])  # the default batch is 128
    assert found[0][0] == "train.batch_size" and "multiple of 3" in found[0][1]
    found = problems(tmp_path, overrides=[*slurm, "cluster.tasks_per_job=2", "teachers.r56.batch_size=99"])
    assert found[0][0] == "teachers.r56.batch_size"
    load(tmp_path, overrides=[*slurm, "cluster.gpus_per_job=2", "cluster.tasks_per_job=2"])


def test_the_rank_count_is_part_of_the_key_only_beyond_one(tmp_path):
    def keys(*overrides):
        return {j.key for j in gridlib.plan(load(tmp_path, overrides=list(overrides))).jobs}

    local = keys()
    assert keys("cluster.executor='slurm'") == local  # one rank: the keys of every existing result stay
    two = keys("cluster.executor='slurm'", "cluster.tasks_per_job=2", "train.mixed_precision='no'")
    assert two.isdisjoint(local)  # 2 CPU ranks or 2 GPUs: the same experiment (precision aside)
    assert two == keys("cluster.executor='slurm'", "cluster.gpus_per_job=2", "train.mixed_precision='no'")
