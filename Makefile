# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# One torch thread per process keeps two processes on 2 cores from thrashing (OpenMP busy-wait).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: any other version may pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]' torch==2.13.0
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/l3dg run default

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest tests/benchmarks --benchmark-only --benchmark-enable -q

clean:
	rm -rf $(VENV) .pytest_cache
