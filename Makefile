# kd-harness. `make demo` runs the main job (a small real grid, locally); `make test` runs the tests.
# Both set everything up first: a virtual environment in .venv, and for the demo CIFAR-10 in data/.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build for this machine; on a CUDA cluster use e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
DATA ?= data

.PHONY: setup data demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: setup
	$(PY) -m harness.data prepare --root $(DATA)

demo: data
	$(PY) -m harness.launch grids/quick.toml
	$(PY) -m harness.report results/quick

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m harness.bench

clean:
	rm -rf $(VENV) results/quick
