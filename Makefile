# chanscale — the two commands that matter are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
# The project's virtual environment, created from any Python >= 3.10 (hack/venv.sh); the system Python is never
# touched. PYTHON=... uses another interpreter as it is (pip installs into it).
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PYTEST ?= $(PYTHON) -m pytest
# pytest-xdist workers for unit + integration: the tests mostly wait on real programs, so 2 fit on 2 cores (3,
# beside the kind bring-up, starved the control planes into timeouts)
# (--dist loadgroup: a module marked xdist_group, e.g. test_argocd.py, runs on one worker and starts its fixture once)
TEST_WORKERS ?= 2
ifeq ($(PYTHON),$(VENV)/bin/python)
export PATH := $(CURDIR)/bin:$(abspath $(VENV))/bin:$(PATH)
else
export PATH := $(CURDIR)/bin:$(PATH)
endif
export PYTHON

.PHONY: help doctor setup setup-demo newcomer newcomer-cheap install tools tools-all demo demo-quick test unit integration lint generated policy-check bench bench-quick e2e clean

help:  ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

doctor:  ## check every precondition of `make demo` and `make test`: one line each, with the fix
	hack/doctor.sh test

setup:  ## doctor, then the venv and every test tool side by side (what `make test` starts with)
	hack/setup.sh test

setup-demo:  ## doctor, then the venv and only the demo's tools side by side (what `make demo` starts with)
	hack/setup.sh demo

install:  ## the project venv (.venv) with the package editable and its dev tools
	hack/venv.sh $(PYTHON) dev

tools:  ## build the pinned test-cluster binaries into ./bin (once; later runs are instant)
	hack/tools.sh

tools-all:  ## also kube-scheduler, kind, kwok
	hack/tools.sh all

demo: setup-demo  ## the local demo: control plane, Prometheus, OPA, operator, a bursty channel; ends with a plot
	$(if $(findstring --real,$(DEMO_ARGS)),hack/tools.sh nats-server)
	$(PYTHON) -m chanscale demo $(DEMO_ARGS)

demo-quick: setup-demo  ## a 60 s demo
	$(if $(findstring --real,$(DEMO_ARGS)),hack/tools.sh nats-server)
	$(PYTHON) -m chanscale demo --duration 60 $(DEMO_ARGS)

test: setup  ## everything CI runs: lint, unit + integration tests, quick benchmarks, the kind e2e suite
	hack/stage.sh lint $(MAKE) lint
	hack/stage.sh "unit + integration tests" $(PYTEST) -m "unit or integration" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)
	hack/stages.sh "quick benchmarks" '$(MAKE) bench-quick' \
		"e2e (kind)" 'hack/e2e-cluster.sh up && CHANSCALE_E2E_REUSE=1 $(PYTEST) -m e2e tests/e2e -v --durations=0 $(PYTEST_ARGS)'

unit: install  ## unit tests only (no binaries needed)
	$(PYTEST) -m unit $(PYTEST_ARGS)

integration: install tools  ## integration tests against the real local control plane, Prometheus and OPA
	$(PYTEST) -m integration $(PYTEST_ARGS)

lint: install generated  ## ruff, mypy, opa fmt/check/test, generated copies in sync
	$(PYTHON) -m ruff check operator tests bench hack sdk/python
	$(PYTHON) -m ruff format --check operator tests bench hack sdk/python
	$(PYTHON) -m mypy
	hack/policy-check.sh
	$(PYTHON) hack/gen_api_docs.py --check
	hack/chart-check.sh

generated:  ## fail when the chart's or the package's copies of crds/ and policies/ drift
	hack/sync-generated.sh --check

bench: install  ## all benchmarks, full size (writes bench/RESULTS.md figures)
	$(PYTHON) -m bench

bench-quick: install  ## a quick run of every benchmark, so none of them rots
	$(PYTHON) -m bench --quick

e2e: install tools  ## kind end-to-end: Docker, offline images, cluster, chart + helm test, tests/e2e (docs/e2e.md)
	hack/stage.sh "e2e: cluster up" hack/e2e-cluster.sh up
	CHANSCALE_E2E_REUSE=1 hack/stage.sh "e2e: tests" $(PYTEST) -m e2e tests/e2e -v --durations=0 $(PYTEST_ARGS)

newcomer:  ## the README's set-up + `make demo` + `make test` in a pristine Debian 12 container, timed (NEWCOMER_SUITE=trixie)
	hack/newcomer.sh --full $(NEWCOMER_SUITE)

newcomer-cheap:  ## CI's newcomer check: a fresh clone in the day's prepared Debian 12 container, `make doctor` + `make demo-quick`
	hack/newcomer.sh --cheap $(NEWCOMER_SUITE)

clean:  ## build outputs and caches (not .venv or ./bin)
	rm -rf .cache/tools out .pytest_cache .mypy_cache .ruff_cache
