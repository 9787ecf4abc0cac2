# `make demo` and `make test` are the whole set-up on a fresh machine: each creates or
# refreshes .venv itself (re-installing when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-planning bench-peers bench-peers-pg docs clean

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

# Two pytest workers (pytest-xdist): most tests wait on subprocesses, fsync and PostgreSQL,
# so two run side by side in about 0.65x the time of one on a 2-CPU machine. Every test has
# its own SQLite file or PostgreSQL schema; tests that share something else are marked with
# one `xdist_group` (run on one worker). PYTEST_WORKERS=0 runs them all one at a time.
PYTEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -rs -n $(PYTEST_WORKERS) --dist loadgroup

bench: $(VENV)/.installed-dev
	$(PY) bench/bench_planning.py
	$(PY) bench/bench_storage.py
	$(PY) bench/bench_actors.py
	$(PY) bench/bench_workloads.py

# W1-W4 side by side with DBOS and taskflow (several minutes; not in CI). The peers live in
# their own virtualenv, built once (its .installed marker is written after a full install).
bench-peers: $(VENV)/.installed
	test -f bench/.venv-peers/.installed || { \
	  $(PYTHON) -m venv bench/.venv-peers && \
	  bench/.venv-peers/bin/python -m pip install -q --upgrade pip && \
	  bench/.venv-peers/bin/python -m pip install -q -r bench/peers/requirements.txt && \
	  touch bench/.venv-peers/.installed; }
	$(PY) bench/bench_peers.py $(BENCH_PEERS_ARGS)

# The same on PostgreSQL (a fresh database per run on PYDYNFLOW_BENCH_POSTGRES's server, by
# default postgresql://postgres@127.0.0.1:5432/postgres; taskflow is not run there).
bench-peers-pg:
	$(MAKE) bench-peers BENCH_PEERS_ARGS="--db postgres $(BENCH_PEERS_ARGS)"

docs: $(VENV)/.installed-dev
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
