# rackpilot — the two commands: `make demo` and `make test`. Both install what is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export DENO_DIR := $(CURDIR)/.cache/deno
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup demo demo-once test test-python test-deno test-sql lint lint-check bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m devstack.cli demo $(DEMO_FLAGS)

demo-once: setup
	$(PY) -m devstack.cli demo --once

test: setup
	@bash scripts/test.sh

# every program rackpilot runs installed? names each missing one with its package (scripts/tools.toml)
.PHONY: check-tools
check-tools:
	@scripts/check_tools check

lint: setup lint-check

# what make lint checks, without the setup step (scripts/test.sh runs it as a suite): ruff,
# and mypy over executor/ and console/ ([tool.mypy] in pyproject.toml)
lint-check:
	$(VENV)/bin/ruff check devstack executor console tests bench notebooks
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	@bench/run_all $(BENCH_FLAGS)

# the DMTF Redfish Service Validator (rf_service_validator) against the simulated iDRAC9 and
# iDRAC10; it needs the DMTF schema bundle: SCHEMAS=<a DMTF/Redfish-Publications copy>/csdl
.PHONY: redfish-service-validator
redfish-service-validator: setup
	$(PY) -m devstack.lab.idrac.validate --schemas "$(SCHEMAS)"

clean:
	-$(PY) -m devstack.cli dev destroy
