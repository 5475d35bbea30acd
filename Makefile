# Two commands for a new user: `make demo` (the nightly DAG end to end) and `make test`.
# Both create or reuse the project-local virtual environment .venv from pinned files.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pip arguments for torch, e.g. a CUDA wheel index (see README: GPU).
TORCH_PIP_ARGS ?=

.PHONY: install demo test test-fast lock bench clean db-stop

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock $(TORCH_PIP_ARGS)
# The Airflow Spark provider requires pyspark-client, which installs some of pyspark's Python
# files at its own version: pyspark's must win, or Python functions in Spark jobs (the score
# job's mapInArrow) fail against pyspark's JVM.
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall "$$(grep '^pyspark==' requirements.lock)"
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/recsys demo

# The browser test needs Chromium: installed here when missing, so `make test` is the one step.
# Two workers, a test file each at a time: much of the suite waits on servers and JVMs starting
# (the backfill test alone runs Airflow for minutes, and goes first: tests/conftest.py), so two
# files overlap even on two cores.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Everything but the slow end-to-end tests, for a quick edit loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

lock: $(STAMP)
	{ echo "# Pinned install set (pip freeze of a working environment). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > requirements.lock

db-stop: $(STAMP)
	$(BIN)/recsys db stop

clean:
	rm -rf var
