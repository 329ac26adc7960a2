# Two commands on a fresh machine (no GPU, no internet beyond PyPI):
#   make run    set up .venv from the lock and run the embedded default suite (suites/asr.yaml)
#   make test   set up .venv from the lock and run the test suite (slow real-training tests excluded)
# Nothing here reads outside the repository: tests use the FSDD subset in tests/data/fsdd; the
# real-speech suites read a full FSDD from KDBENCH_FSDD_ROOT, if you set it.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
SUITE ?= suites/asr.yaml
export OMP_WAIT_POLICY = PASSIVE
export GOMP_SPINCOUNT ?= 2000

.PHONY: setup run test test-all lock clean

# uv, itself pinned by hash, installs the lock: ~30 s for the whole set on a cold cache where
# pip takes ~3.5 min (most of a newcomer's time to the first leaderboard).
$(UV): requirements/bootstrap.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -qq --require-hashes --no-deps -r requirements/bootstrap.txt
	touch $@

$(VENV)/.installed: $(UV) requirements/lock.txt pyproject.toml
	$(UV) pip install -q --python $(VENV)/bin/python --require-hashes -r requirements/lock.txt
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/kdbench run $(SUITE)

test: setup
	$(VENV)/bin/python -m pytest -m "not slow" -q

test-all: setup
	$(VENV)/bin/python -m pytest -q

# Re-resolve every dependency (pyproject.toml's ranges + the build backend) for all platforms
# uv knows, with hashes. Commit the result; setup installs exactly that.
lock: $(UV)
	$(UV) pip compile --quiet --universal --python-version 3.10 --generate-hashes --extra test --extra ray \
		pyproject.toml requirements/build.in -o requirements/lock.txt
	$(UV) pip compile --quiet --universal --python-version 3.10 --generate-hashes \
		requirements/bootstrap.in -o requirements/bootstrap.txt

clean:
	rm -rf $(VENV) results/*/ results/mlflow.db results/mlartifacts
