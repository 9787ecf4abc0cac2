# `make demo` and `make test` are the whole set-up on a fresh machine: each creates or
# refreshes .venv itself (re-installing when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-planning docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(PY) examples/orchestrate.py

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check pydynflow tests examples bench
	$(PY) -m ruff format --check pydynflow tests examples bench
	$(PY) -m mypy pydynflow

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.installed-dev
	$(PY) bench/bench_planning.py
	$(PY) bench/bench_storage.py
	$(PY) bench/bench_actors.py
	$(PY) bench/bench_workloads.py

docs: $(VENV)/.installed-dev
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
