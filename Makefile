# difo: the everyday commands. Everything runs from .venv, created on first use.
#
#   make test     install, then ruff, mypy --strict and pytest
#   make lint     install, then ruff and mypy only
#   make demo     install, then a server and a client at work (difo demo)
#   make faults   install, then the fault suite (tests/faults) at its big sizes, with its
#                 one-line reports (DIFO_FAULTS_SCALE=10; docs/reliability.md)
#   make bench    install, then bench/compare.py: difo beside RQ, Celery, Dramatiq, Huey, arq
#                 and Sidekiq (make bench BENCH_ARGS=--quick; peers go to bench/.peers/)
#
# The install reruns only when pyproject.toml is newer than the stamp in .venv, so repeated
# runs go straight to the work. Nothing here uses apt-get or sudo: `.ci/run` installs system
# packages on a fresh machine, then runs `make test`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.difo-dev-installed
BENCH_ARGS ?=
PYTEST_ARGS ?=

# The oldest Python difo supports; checked before a venv is made and before installing.
CHECK_PYTHON := import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)

.DEFAULT_GOAL := test
.PHONY: test lint install demo bench faults
FAULTS_SCALE ?= 10

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

install: $(STAMP)

demo: install
	$(BIN)/difo demo

faults: install
	DIFO_FAULTS_SCALE=$(FAULTS_SCALE) $(BIN)/pytest -q -s tests/faults $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: $(PYTHON) not found; difo needs Python 3.10 or newer" >&2; exit 1; }
	@$(PYTHON) -c '$(CHECK_PYTHON)' || { \
	  echo "make: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; \
	  print(platform.python_version())'); difo needs 3.10 or newer (make PYTHON=python3.12)" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c '$(CHECK_PYTHON)' || { \
	  echo "make: $(VENV) runs Python < 3.10; remove it and run make again" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@
