# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench docs lint clean

# Idempotent: the venv is rebuilt only when pyproject.toml changes.
# torch==2.13.0 goes in first: a CPU build lies on disk here, and a bare
# `torch` requirement would otherwise pull a multi-GB CUDA build.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

# The benchmarks' peers (Spark, Dask) are only needed by `make bench`.
$(VENV)/.bench: $(STAMP)
	$(PIP) install -q -e '.[dev,bench]'
	touch $@

demo: install
	$(VENV)/bin/mixfleet demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not multinode and not slow"

bench: $(VENV)/.bench
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Regenerates every <!-- results:NAME --> block in README.md and docs/*.md from benchmarks/results/NAME.json.
docs: install
	$(PY) scripts/make_docs.py

lint: install
	$(VENV)/bin/ruff check mixfleet tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
