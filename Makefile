# virtuoso-deploy — the public interface. Every target does its own prerequisites,
# so `make deploy` and `make test` work on a fresh clone of a Debian 12 machine (as root).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
COLLECTIONS := .collections
# Debian's own Python 3.11 (not whatever `python3` is first on PATH): the controller matches the hosts.
SYSTEM_PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=

export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0

.PHONY: help setup host-deps sandbox-up sandbox-down sandbox-status deploy test lint unit molecule bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

host-deps:
	@bash scripts/install-host-deps.sh

$(VENV)/.installed: requirements/dev.txt requirements/runtime.txt requirements/smoke.txt | host-deps
	@test -x $(VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt
	@touch $@

$(COLLECTIONS)/.installed: scripts/install-collections.py | $(VENV)/.installed
	$(VENV)/bin/python scripts/install-collections.py $(COLLECTIONS)
	@touch $@

setup: $(VENV)/.installed $(COLLECTIONS)/.installed ## Install the controller toolchain (.venv, collections, apt packages)

# The app root of each sandbox host is a 1 GiB tmpfs, so the fault suite can fill a host's disk.
SANDBOX_APP_TMPFS ?= 1g
export SANDBOX_APP_TMPFS
sandbox-up: setup ## Start the local sandbox hosts (real systemd + sshd on 127.0.0.1)
	@bash scripts/sandbox.sh up

sandbox-down: ## Remove every sandbox host and the egress rule
	@bash scripts/sandbox.sh down
	@rm -rf .cache/facts

sandbox-status: ## Show the sandbox hosts
	@bash scripts/sandbox.sh status

deploy: sandbox-up ## Deploy the application to the sandbox hosts
	ansible-playbook playbooks/deploy.yml

lint: setup ## ansible-lint (production profile), yamllint, ruff
	yamllint --strict .
	ansible-lint --offline
	ruff check .
	ruff format --check .

unit: setup ## Tests that need no sandbox host
	pytest -m "not sandbox" $(PYTEST_ARGS)

test: lint sandbox-up ## Everything CI runs: lint, unit, sandbox integration + fault tests, molecule
	pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory molecule

# Molecule scenarios (molecule/): `default` (the whole deploy.yml) and one per role, each on its own
# throwaway host of the sandbox image (`network: none`, so no egress rule is needed). MOLECULE_SCENARIOS
# picks some, e.g. `make molecule MOLECULE_SCENARIOS="default virtuoso_smoke"`.
MOLECULE_SCENARIOS ?= default virtuoso_python virtuoso_release virtuoso_services virtuoso_smoke
molecule: setup ## Molecule: converge, idempotence and verify of deploy.yml and of every role
	@bash scripts/sandbox.sh image
	@export CONTAINERS_CONF=$(CURDIR)/.sandbox/containers.conf CONTAINERS_STORAGE_CONF=$(CURDIR)/.sandbox/storage.conf \
	  ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1; \
	for scenario in $(MOLECULE_SCENARIOS); do \
	  start=$$(date +%s); \
	  molecule test --scenario-name "$$scenario" || { echo "molecule: scenario $$scenario FAILED"; exit 1; }; \
	  echo "molecule: scenario $$scenario passed in $$(( $$(date +%s) - start ))s"; \
	done

bench: sandbox-up ## Benchmarks (ratios measured side by side; the deploy ones use the sandbox)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/bench.txt
	@for script in bench/bench_*.py; do echo "== $$script"; python "$$script"; done

clean: sandbox-down ## Remove the local toolchain and all generated state
	rm -rf $(VENV) $(COLLECTIONS) .cache reports
