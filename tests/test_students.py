"""[students.NAME] tables: several student architectures in one grid, each with its own teacher sets,
recipe and method parameters; and grids/cifar100.toml, the CIFAR-100 benchmark that needs them."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import grid as gridlib
from harness.config.grid import GridError

ROOT = Path(__file__).resolve().parents[1]

BASE = """
name = "s"
[teachers.r56]
arch = "resnet56"
[teachers.r110]
arch = "resnet110"
[students.r20]
arch = "resnet20"
teacher_sets = [["r56"]]
[students.r32]
arch = "resnet32"
teacher_sets = [["r56"], ["r110"]]
epochs = 7
[grid]
method = ["ce", "kd"]
seed = [0, 1]
"""


def load(tmp_path, text=BASE, overrides=()):
    path = tmp_path / "g.toml"
    path.write_text(text)
    return gridlib.load(path, list(overrides))


def plan(tmp_path, text=BASE, overrides=()):
    return gridlib.plan(load(tmp_path, text, overrides))


def problems(tmp_path, text=BASE, overrides=()) -> list[tuple[str, str]]:
    with pytest.raises(GridError) as info:
        load(tmp_path, text, overrides)
    return info.value.problems


def combos(p) -> list[tuple[str, str, str, int]]:
    return sorted((j.arch, j.method, j.teacher_set, j.seed) for j in p.stage("student"))


def test_each_student_with_its_own_teacher_sets(tmp_path):
    p = plan(tmp_path)
    students = p.stage("student")
    # r20: ce + kd(r56); r32: ce + kd(r56) + kd(r110); two seeds each
    assert len(students) == (2 + 3) * 2
    assert sorted({j.arch for j in students}) == ["resnet20", "resnet32"]
    assert {(j.arch, j.teacher_set) for j in students if j.method == "kd"} == {
        ("resnet20", "r56"), ("resnet32", "r56"), ("resnet32", "r110")}
    assert sorted(j.arch for j in p.stage("teacher")) == ["resnet110", "resnet56"]
    assert p.jobs[:2] == p.stage("teacher")


def test_a_teacher_free_method_runs_once_per_student_without_teachers(tmp_path):
    ce = [j for j in plan(tmp_path).stage("student") if j.method == "ce"]
    assert sorted((j.arch, j.seed) for j in ce) == [("resnet20", 0), ("resnet20", 1), ("resnet32", 0), ("resnet32", 1)]
    assert all(j.teachers == () and j.teacher_set == "none" for j in ce)


def test_teacher_keys_follow_the_pairs(tmp_path):
    p = plan(tmp_path)
    teacher = {j.arch: j.key for j in p.stage("teacher")}
    for job in p.stage("student"):
        if job.method == "kd":
            assert job.teachers == ({"r56": teacher["resnet56"], "r110": teacher["resnet110"]}[job.teacher_set],)


def test_only_teachers_some_student_needs_are_planned(tmp_path):
    p = plan(tmp_path, overrides=["students.r32.teacher_sets=[['r56']]"])
    assert [j.arch for j in p.stage("teacher")] == ["resnet56"]
    p = plan(tmp_path, overrides=["grid.method=['ce']"])
    assert p.stage("teacher") == []


def test_a_student_without_teacher_sets_takes_the_grids(tmp_path):
    text = BASE.replace('teacher_sets = [["r56"]]\n', "") + 'teacher_set = [["r110"]]\n'
    p = plan(tmp_path, text)
    assert {(j.arch, j.teacher_set) for j in p.stage("student") if j.method == "kd"} == {
        ("resnet20", "r110"), ("resnet32", "r56"), ("resnet32", "r110")}


def test_a_variants_own_teacher_sets_win(tmp_path):
    text = BASE + '[methods.both]\nterms = ["kd"]\nteacher_sets = [["r56", "r110"]]\n'
    p = plan(tmp_path, text, ["grid.method=['ce', 'kd', 'both']"])
    assert {(j.arch, j.teacher_set) for j in p.stage("student") if j.method == "both"} == {
        ("resnet20", "r56+r110"), ("resnet32", "r56+r110")}
    assert {(j.arch, j.teacher_set) for j in p.stage("student") if j.method == "kd"} == {
        ("resnet20", "r56"), ("resnet32", "r56"), ("resnet32", "r110")}


def test_a_students_recipe_overrides_land_in_its_jobs_and_keys(tmp_path):
    p = plan(tmp_path, BASE + "[train]\nepochs = 30\nlr = 0.05\n", ["students.r20.eval_batch_size=17"])
    recipes = {j.arch: j.config["recipe"] for j in p.stage("student")}
    assert recipes["resnet32"]["epochs"] == 7 and recipes["resnet20"]["epochs"] == 30  # own value, else [train]'s
    assert recipes["resnet32"]["lr"] == recipes["resnet20"]["lr"] == 0.05
    assert all(j.config["recipe"]["epochs"] == 30 for j in p.stage("teacher"))  # teachers: [train]'s recipe
    r20 = [j for j in p.stage("student") if j.arch == "resnet20"]
    assert all(j.runtime["eval_batch_size"] == 17 for j in r20)  # a runtime key: in the job, not in its key
    keys = lambda *sets: {j.key for j in plan(tmp_path, overrides=list(sets)).stage("student") if j.arch == "resnet32"}  # noqa: E731
    assert keys("students.r32.epochs=8").isdisjoint(keys())
    assert keys("students.r32.eval_batch_size=17") == keys()


def test_a_students_own_method_parameters(tmp_path):
    p = plan(tmp_path, overrides=["students.r32.methods.kd.temperature=2.0", "methods.kd.alpha=0.5"])
    params = {j.arch: j.config["method"]["params"]["kd"] for j in p.stage("student") if j.method == "kd"}
    assert params["resnet32"]["temperature"] == 2.0 and params["resnet20"]["temperature"] == 4.0
    assert params["resnet32"]["alpha"] == params["resnet20"]["alpha"] == 0.5  # the grid's, laid under the student's
    assert {j.method for j in p.stage("student")} == {"ce", "kd"}  # the same method name for every student


def test_a_student_like_the_train_student_has_its_keys(tmp_path):
    """A [students.NAME] table that says what [train] would is the same experiment: the same keys."""
    one = BASE.split("[students.r20]")[0] + '[grid]\nmethod = ["ce", "kd"]\nseed = [0, 1]\nteacher_set = [["r56"]]\n'
    students = [j.key for j in plan(tmp_path).stage("student") if j.arch == "resnet20"]
    assert sorted(students) == sorted(j.key for j in plan(tmp_path, one).stage("student"))


def test_without_students_train_is_the_one_student(tmp_path):
    text = BASE.split("[students.r20]")[0] + '[train]\narch = "resnet32"\n[grid]\nmethod = ["ce", "kd"]\nteacher_set = [["r56"]]\n'
    p = plan(tmp_path, text)
    assert {j.arch for j in p.stage("student")} == {"resnet32"} and len(p.stage("student")) == 2


@pytest.mark.parametrize("override, path, fragment", [
    ("students.r20.epoch=3", "students.r20.epoch", "did you mean 'epochs'"),
    ("students.r20.arch='resnet21'", "students.r20.arch", "allowed: 'resnet20'"),
    ("students.r20.teacher_sets=[['r65']]", "students.r20.teacher_sets[0]", "did you mean 'r56'"),
    ("students.r32.teacher_sets=[['r56'], ['r111']]", "students.r32.teacher_sets[1]", "did you mean 'r110'"),
    ("students.r20.teacher_sets=[[]]", "students.r20.teacher_sets[0]", "empty teacher set"),
    ("students.r20.teacher_sets='r56'", "students.r20.teacher_sets", "expected list[list[str]]"),
    ("students.r20.teacher_sets=[]", "students.r20.teacher_sets", "'kd' uses teachers"),
    ("students.r20.epochs=0", "students.r20.epochs", "must be ≥ 1"),
    ("students.r20.lr=0", "students.r20.lr", "must be > 0"),
    ("students.r20.mixed_precision='fp16'", "students.r20.mixed_precision", "needs a CUDA GPU"),
    ("students.r20.batch_size=100000", "students.r20.batch_size", "exceeds"),
    ("students.r20.milestones=[300]", "students.r20.milestones", "past the last epoch"),
    ("students.r20.methods.kd.temprature=2.0", "students.r20.methods.kd.temprature", "did you mean 'temperature'"),
    ("students.r20.methods.kd.alpha=2.0", "students.r20.methods.kd.alpha", "must be ≤ 1"),
    ("students.r20.methods.kdd.alpha=0.5", "students.r20.methods.kdd", "did you mean 'kd'"),
    ("students.r20.methods.kd.teacher_sets=[['r56']]", "students.r20.methods.kd.teacher_sets", "belongs in [methods.kd]"),
    ("students.r20.methods=3", "students.r20.methods", "expected a table"),
    ("students.r20=3", "students.r20", "expected a table"),
    ("train.arch='resnet20'", "train.arch", "[students.NAME] tables name the students"),
    ("studnets.r20.arch='resnet20'", "studnets", "did you mean 'students'"),
])
def test_bad_students_name_key_and_what_is_allowed(tmp_path, override, path, fragment):
    found = problems(tmp_path, overrides=[override])
    assert any(p == path and fragment in msg for p, msg in found), found


def test_a_student_needs_its_arch(tmp_path):
    found = problems(tmp_path, BASE.replace('arch = "resnet20"\n', ""))
    assert ("students.r20.arch", "required (student architecture)") in found


def test_ranks_split_each_students_batch(tmp_path):
    found = problems(tmp_path, overrides=["cluster.executor='slurm'", "cluster.tasks_per_job=2",
                                          "train.batch_size=64", "students.r32.batch_size=99"])
    assert [p for p, _ in found] == ["students.r32.batch_size"]


def test_a_method_build_problem_names_the_student(tmp_path):
    found = problems(tmp_path, overrides=["grid.method=['kd+mate']"])
    assert any(p == "grid.method[0]" and "student 'r20'" in msg for p, msg in found), found


def test_two_students_whose_runs_would_share_a_label_are_refused(tmp_path):
    text = BASE + '[students.r20b]\narch = "resnet20"\nteacher_sets = [["r110"]]\nlr = 0.2\n'
    found = problems(tmp_path, text)  # both run ce without teachers: resnet20 · ce · none, other recipes
    assert any(p == "students.r20b" and "'ce' jobs with teachers none" in msg for p, msg in found), found
    same = plan(tmp_path, text.replace("lr = 0.2\n", ""))  # the same recipe: their ce runs are one job each seed
    assert len([j for j in same.stage("student") if j.arch == "resnet20" and j.method == "ce"]) == 2
    assert {j.teacher_set for j in same.stage("student") if j.arch == "resnet20" and j.method == "kd"} == {"r56", "r110"}


# ------------------------------------------------------------------ grids/cifar100.toml

PAIRS = {"resnet8x4": "resnet32x4", "resnet20": "resnet56", "wrn_16_2": "wrn_40_2", "vgg8": "vgg13"}
DKD_BETA = {"resnet8x4": 8.0, "resnet20": 2.0, "wrn_16_2": 6.0, "vgg8": 6.0}  # methods/dkd.py: per pair
METHODS = ["ce", "kd", "kd_std", "dkd", "dist", "kd+at"]


@pytest.fixture(scope="module")
def benchmark():
    return gridlib.plan(gridlib.load(ROOT / "grids" / "cifar100.toml"))


def test_benchmark_plans_every_pair_method_and_seed(benchmark):
    assert len(benchmark.jobs) == 4 + 4 * 6 * 3 == 76
    assert sorted(j.arch for j in benchmark.stage("teacher")) == sorted(PAIRS.values())
    assert combos(benchmark) == sorted((arch, method, "none" if method == "ce" else PAIRS[arch], seed)
                                       for arch in PAIRS for method in METHODS for seed in (0, 1, 2))
    teacher = {j.arch: j.key for j in benchmark.stage("teacher")}
    for job in benchmark.stage("student"):
        assert job.teachers == (() if job.method == "ce" else (teacher[PAIRS[job.arch]],))
        assert job.config["data"]["dataset"] == "cifar100"


def test_benchmark_recipe_is_crds(benchmark):
    for job in benchmark.jobs:
        recipe = job.config["recipe"]
        assert (recipe["epochs"], recipe["lr"], recipe["batch_size"], recipe["momentum"], recipe["nesterov"],
                recipe["weight_decay"], recipe["gamma"]) == (240, 0.05, 64, 0.9, False, 5e-4, 0.1)
        assert [m * recipe["epochs"] for m in recipe["milestones"]] == [150, 180, 210]  # exactly


def test_benchmark_dkd_beta_per_pair(benchmark):
    dkd = [j for j in benchmark.stage("student") if j.method == "dkd"]
    assert len(dkd) == 12
    for job in dkd:
        params = job.config["method"]["params"]["dkd"]
        assert params["beta"] == DKD_BETA[job.arch], job.arch
        assert (params["alpha"], params["temperature"], params["warmup_epochs"]) == (1.0, 4.0, 20.0)


def test_benchmark_kd_variants(benchmark):
    params = {j.method: j.config["method"]["params"] for j in benchmark.stage("student") if j.arch == "resnet20"}
    assert params["kd"]["kd"]["temperature"] == 4.0 and params["kd"]["kd"]["alpha"] == 0.9
    assert "standardize" not in params["kd"]["kd"]  # at its default: out of the key
    std = params["kd_std"]["kd"]
    assert std["standardize"] is True and std["temperature"] == 2.0 and std["alpha"] == pytest.approx(90 / 91)
    assert params["kd+at"]["at"]["weight"] == 1000.0


def test_benchmark_shrinks_with_set():
    shrunk = gridlib.plan(gridlib.load(ROOT / "grids" / "cifar100.toml", [
        "train.epochs=1", "grid.seed=[0]", "grid.method=['ce', 'dkd']", "data.limit_train=500"]))
    assert len(shrunk.jobs) == 4 + 4 * 2
    assert {j.config["recipe"]["epochs"] for j in shrunk.jobs} == {1}
    assert {j.arch: j.config["method"]["params"]["dkd"]["beta"]
            for j in shrunk.stage("student") if j.method == "dkd"} == DKD_BETA
