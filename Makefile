# Two commands on a fresh machine (no GPU, no internet beyond PyPI):
#   make run    set up .venv and run the embedded default suite (suites/asr.yaml)
#   make test   set up .venv and run the test suite (slow real-training tests excluded)
PYTHON ?= python3
VENV := .venv
FSDD ?= $(abspath ../shared/data/fsdd)
SUITE ?= suites/asr.yaml
export OMP_WAIT_POLICY = PASSIVE
export GOMP_SPINCOUNT ?= 2000
export KDBENCH_FSDD_ROOT ?= $(FSDD)

.PHONY: setup run test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/kdbench run $(SUITE)

test: setup
	$(VENV)/bin/python -m pytest -m "not slow" -q

test-all: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) results/*/ results/mlflow.db results/mlartifacts
