# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench gpu-check install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: any other version may pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]' torch==2.13.0
	# MOSES SMILES for the `moses` dataset; --no-deps: molsets pins a broken pomegranate.
	$(PY) -m pip install --quiet --no-deps molsets
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/l3dg run default

# Tests start subprocesses (CLI, sweep workers): passive OpenMP waiting keeps two busy
# processes on 2 cores from slowing each other 25-40x. `make run` is one process and keeps
# OpenMP's default (faster) busy-waiting.
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

bench: $(STAMP)
	OMP_NUM_THREADS=2 OMP_WAIT_POLICY=ACTIVE $(PY) -m pytest tests/benchmarks --benchmark-only --benchmark-enable -q

# A few minutes on a GPU machine (CUDA path, bf16-mixed, 1-device DDP, a tiny study with a
# seconds budget and learning curves, EGNN 9x256 throughput); says so and exits 0 without one.
# Needs a CUDA build of torch 2.13.0 in the venv (the install above is the CPU build).
gpu-check: $(STAMP)
	$(PY) tests/benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache
