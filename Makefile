# Switchyard: `make demo` runs a simulated site; `make test` sets up and runs every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# Every dependency of the server, demo and dev extras (and the build backend), pinned with hashes
# for CPython 3.11 on Linux x86_64: a fresh machine installs what CI tested. `make lock` rewrites it.
LOCK   := requirements.lock
PIP_TOOLS ?= pip-tools==7.6.2

PG_URL    ?= postgresql://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test lint typecheck unit integration e2e services install lock clean bench

# The lock, then the project itself without resolving anything again (its build backend is locked too).
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Re-pin after a change to pyproject.toml's dependencies; existing pins are kept unless
# `make lock LOCK_FLAGS=--upgrade`. pip-tools goes into the venv, not into the project's dependencies.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(PIP_TOOLS)
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
		--no-emit-index-url --no-emit-find-links --extra server --extra demo --extra dev \
		$(LOCK_FLAGS) --output-file $(LOCK) pyproject.toml

demo: $(STAMP)
	$(VENV)/bin/switchyard demo

# PostgreSQL and Redis for the tests: use the running ones, else install/start Debian's.
services:
	@./.ci/services.sh "$(PG_URL)" "$(REDIS_URL)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy controlplane agents tests bench

test: $(STAMP) services lint typecheck
	$(VENV)/bin/pytest -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) services
	$(VENV)/bin/pytest -q tests/integration

e2e: $(STAMP) services
	$(VENV)/bin/pytest -q tests/e2e

clean:
	rm -rf $(VENV) .switchyard .pytest_cache .mypy_cache .ruff_cache

# Benchmarks: figures for the README, written to bench/results/ (not part of `make test`).
bench: $(STAMP) services
	$(PY) bench/bench_nvml.py --passes 2000
	$(PY) bench/bench_agent.py
	$(PY) bench/bench_agent_cpu.py --seconds 60 --backend sim
	$(PY) bench/bench_agent_cpu.py --seconds 60 --backend nvml --fake-nvml
	$(PY) bench/bench_scheduler_core.py
	$(PY) bench/bench_scheduler_commit.py
	$(PY) bench/bench_ledger.py
	$(PY) bench/bench_notify_latency.py --samples 300
	$(PY) bench/replay_day.py
	SWITCHYARD_SAFETY_EXAMPLES=3000 $(VENV)/bin/pytest -q -p no:randomly tests/integration/test_scheduler_safety.py -k "owners and sqlite"
