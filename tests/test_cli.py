"""Every command answers --help, and the README's key reference matches the schema."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["harness.launch", "harness.data", "harness.collect", "harness.report",
                                    "harness.bench", "harness.job", "harness.status", "harness.export",
                                    "harness.schema", "harness.explain"])
def test_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python -m " + module in out.stdout


def test_readme_documents_every_key():
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "README is stale: paste `python -m harness.schema` between the schema markers"


def test_example_grids_are_valid(monkeypatch):
    from harness.config import grid as gridlib

    monkeypatch.chdir(ROOT)  # their data and checkpoint paths are relative to the repository, where they run
    plans = {name: gridlib.plan(gridlib.load(ROOT / "grids" / f"{name}.toml")) for name in ("quick", "paper")}
    for plan in plans.values():
        assert plan.stage("student") and (plan.stage("teacher") or plan.external)
    assert not plans["quick"].stage("teacher")  # its teacher is the shipped checkpoint
