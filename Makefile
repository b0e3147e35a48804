# Consul-backed service discovery platform. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
CONSUL_ENSURE := consul/ensure-consul
PYTEST_ARGS ?=
# make test's pytest-xdist workers (0: one process, no xdist)
PYTEST_WORKERS ?= 2
USERS ?= 3
ORDERS ?= 3
INVENTORIES ?= 2
# order-service canaries (version 2.0.0) for make demo's canary; empty: 1 in the dev profile
CANARIES ?=
SERVICE ?=
PROFILE ?= dev
PORT_OFFSET ?=
# MESH=1: every service but the gateway serves in Consul's mesh (mTLS, intentions);
# the secure profile's default (MESH=0 turns it off there)
MESH ?=
CLUSTER_ENV = PROFILE=$(PROFILE) PORT_OFFSET=$(PORT_OFFSET) MESH=$(MESH)

.DEFAULT_GOAL := help
.PHONY: help setup debian-packages venv consul test lint clean run-cluster status logs stop-cluster demo rolling-restart ui-token

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[platform,dev,bench]'
	@touch $@

venv: $(VENV)/.installed ## Create .venv: the library (editable) with the example platform, dev and bench extras

setup: debian-packages venv consul ## Everything a newcomer needs: Debian packages, venv, dependencies, Consul

debian-packages: ## apt-get install what is missing of chromium, chromium-driver, haproxy, prometheus
	@services/cluster/debian-packages

consul: ## Find or build the pinned Consul; prints the binary's path last
	@$(CONSUL_ENSURE)

test: setup ## Run the whole test suite against a real Consul agent
	@# Two workers for everything but the timings (tests/conftest.py: _ALONE), then those
	@# alone; exit 5 is "nothing selected" (PYTEST_ARGS narrowed it away), not a failure.
	export CONSUL_BIN="$$($(CONSUL_ENSURE) | tail -n 1)"; \
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not alone" $(PYTEST_ARGS); rc=$$?; \
	$(PY) -m pytest -p no:xdist -m alone $(PYTEST_ARGS); alone=$$?; \
	[ $$rc -eq 5 ] && rc=0; [ $$alone -eq 5 ] && alone=0; \
	[ $$rc -eq 0 ] && [ $$alone -eq 0 ]

# Every cluster target takes PROFILE=dev (default: one dev agent, everything open) or
# PROFILE=secure (3 servers + 2 client agents, ACLs default-deny, TLS, gossip encryption),
# and PORT_OFFSET=N to move every port by N when the defaults are taken; MESH=1 puts the
# services in Consul's mesh (mTLS only, intentions written at up; the gateway stays HTTP):
# the secure profile's default, MESH=0 there to run it without.
run-cluster: setup ## Start Consul + Prometheus + gateway + USERS/ORDERS/INVENTORIES instances in the background (PROFILE=secure: ACL+TLS)
	$(CLUSTER_ENV) USERS=$(USERS) ORDERS=$(ORDERS) INVENTORIES=$(INVENTORIES) CANARIES=$(CANARIES) $(PY) -m services.cluster up

status: venv ## Supervisor state and Consul health of every cluster instance
	@$(CLUSTER_ENV) $(PY) -m services.cluster status

logs: venv ## The last lines of every cluster log
	@$(CLUSTER_ENV) $(PY) -m services.cluster logs

stop-cluster: venv ## Drain and deregister every instance, then stop Consul
	$(CLUSTER_ENV) $(PY) -m services.cluster down

demo: venv ## The seed's flow through the gateway, a live KV setting (either profile), then the canary (dev)
	$(CLUSTER_ENV) $(PY) -m services.cluster demo

rolling-restart: venv ## Restart SERVICE's instances one at a time (make rolling-restart SERVICE=order-service)
	@test -n "$(SERVICE)" || { echo "usage: make rolling-restart SERVICE=order-service" >&2; exit 2; }
	$(CLUSTER_ENV) $(PY) -m services.cluster rolling-restart $(SERVICE)

intentions: venv ## Mesh intentions: make intentions [ARGS="list" | "allow SRC DST" | "deny SRC DST" | "delete SRC DST"] (operator token in PROFILE=secure)
	@$(CLUSTER_ENV) $(PY) -m services.cluster intentions $(or $(ARGS),list)

ui-token: venv ## Print the secure cluster's read-only operator token (last line), for the Consul UI
	@$(CLUSTER_ENV) $(PY) -m services.cluster ui-token

lint: venv ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## Remove the venv, caches and test artifacts (the Consul build cache stays)
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: bench bench-quick intentions
bench: setup ## Every benchmark (< 10 min): tables, bench/results/latest.json, PNG charts
	CONSUL_BIN="$$($(CONSUL_ENSURE) | tail -n 1)" $(PY) -m bench

bench-quick: setup ## Every benchmark at tiny size (about 3 min; proves they run, no targets enforced)
	CONSUL_BIN="$$($(CONSUL_ENSURE) | tail -n 1)" $(PY) -m bench --quick
