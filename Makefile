# Switchyard: `make demo` runs a simulated site; `make test` sets up and runs every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

PG_URL    ?= postgresql://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test lint typecheck unit integration e2e services install clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[server,demo,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/switchyard demo

# PostgreSQL and Redis for the tests: use the running ones, else install/start Debian's.
services:
	@./.ci/services.sh "$(PG_URL)" "$(REDIS_URL)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy controlplane agents

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
	$(PY) bench/bench_notify_latency.py --samples 300
	$(PY) bench/replay_day.py
	SWITCHYARD_SAFETY_EXAMPLES=3000 $(VENV)/bin/pytest -q -p no:randomly tests/integration/test_scheduler_safety.py -k "owners and sqlite"
