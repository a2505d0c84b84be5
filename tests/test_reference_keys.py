"""The job keys of the committed reference grids are pinned: a change to how keys are computed would
make every completed job of those result folders (and of users' own) train again. If a change to a
key is deliberate, regenerate tests/golden/reference_keys.json and say why in the commit."""
import json
from pathlib import Path

import pytest

from harness.config import grid as gridlib, precision

ROOT = Path(__file__).resolve().parents[1]
PINNED = json.loads((ROOT / "tests" / "golden" / "reference_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_reference_grid_keys_are_pinned(name, monkeypatch):
    # `auto` precision resolves per host: the quick reference grid trained in float32 on a CPU without
    # native bf16, so the keys are computed as there, whatever this host has
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.chdir(ROOT)  # the quick grid's teacher checkpoint path is relative to the repository
    plan = gridlib.plan(gridlib.load(ROOT / "results" / "reference" / name / "grid.toml"))
    assert sorted(j.key for j in plan.jobs) == PINNED[name]


def test_every_reference_grid_is_pinned():
    assert sorted(p.parent.name for p in (ROOT / "results" / "reference").glob("*/grid.toml")) == sorted(PINNED)


def test_a_parameter_added_later_changes_keys_only_when_set():
    """kd's `standardize` came after kd results existed: false (its default) leaves their keys as
    they were; true is another experiment, with its own key."""
    path = ROOT / "results" / "reference" / "study" / "grid.toml"
    keys = lambda *sets: sorted(j.key for j in gridlib.plan(gridlib.load(path, list(sets))).jobs)  # noqa: E731
    assert keys("methods.kd.standardize=false") == keys() == PINNED["study"]
    changed = set(keys("methods.kd.standardize=true")) - set(PINNED["study"])
    assert changed and len(changed) < len(PINNED["study"])  # the jobs with a kd term, and only those
