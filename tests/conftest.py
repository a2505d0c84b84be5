"""Shared fixtures: a tiny CIFAR-format cache made by the tests, and tiny grid files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.fakedata import make_fake_cifar100_cache, make_fake_cifar_cache

TINY_GRID = """
name = "tiny"
[data]
root = "{root}"
val_size = 100
limit_train = 300
limit_test = 100
[train]
arch = "resnet20"
epochs = 3
batch_size = 32
lr = 0.1
schedule = "cosine"
eval_batch_size = 200
[teachers.small]
arch = "resnet20"
seed = 7
epochs = 3
[grid]
method = ["ce", "kd"]
seed = [0, 1]
teacher_set = [["small"]]
[cluster]
executor = "{executor}"
"""


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_fake_cifar_cache(root, n_train=600, n_test=200)
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    """A fake CIFAR-100 cache (1,000 training images: 10 per class; 200 test images: 2 per class)."""
    root = tmp_path_factory.mktemp("data100")
    make_fake_cifar100_cache(root, n_train=1000, n_test=200)
    return root


@pytest.fixture
def write_grid(tmp_path, cifar_root):
    """write_grid(text=TINY_GRID, **fields) -> path of a grid file in tmp_path."""

    def write(text: str = TINY_GRID, name: str = "grid.toml", executor: str = "local") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).format(root=cifar_root, executor=executor))
        return path

    return write


def planned_jobs(grid: Path, out: Path, *options: str) -> list:
    """What `launch` writes before it queues anything (its job folders, not run): their JobPaths."""
    from harness.launch import load_plan, parse_args, write_plan
    from harness.run.layout import GridPaths

    args = parse_args([str(grid), "--out", str(out), *options])
    plan = load_plan(args)
    root = out / plan.grid["name"]
    write_plan(plan, root, args)
    return [GridPaths(root).job(job.key) for job in plan.jobs]
