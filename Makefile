# Consul-backed service discovery platform. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
CONSUL_ENSURE := consul/ensure-consul
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup venv consul test lint clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

venv: $(VENV)/.installed ## Create .venv with the project and its dev dependencies

setup: venv consul ## Everything a newcomer needs: venv, dependencies, Consul

consul: ## Find or build the pinned Consul; prints the binary's path last
	@$(CONSUL_ENSURE)

test: setup ## Run the whole test suite against a real Consul agent
	CONSUL_BIN="$$($(CONSUL_ENSURE) | tail -n 1)" $(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## Remove the venv, caches and test artifacts (the Consul build cache stays)
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
