# The two commands of the README: `make run` (embedded default, demo cohort) and `make test`.
# `make run` installs the service alone; `make test` adds the test extras.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(INSTALLED_TEST): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED)

install: $(INSTALLED_TEST)

run: $(INSTALLED)
	$(BIN)/ctdna serve --demo --host $(HOST) --port $(PORT)

demo: $(INSTALLED)
	$(BIN)/ctdna demo

# The fast layer (science, schemas, reports, in-process service tests; two processes):
# within 5 minutes on 2 cores. The end-to-end suite starts the API, workers, Redis and a
# browser as real processes; `.ci/run` runs lint, then both.
test: $(INSTALLED_TEST)
	$(BIN)/pytest -q -m "not e2e" -n 2

test-e2e: $(INSTALLED_TEST)
	$(BIN)/pytest -q -m e2e

check: lint test test-e2e

lint: $(INSTALLED_TEST)
	$(BIN)/ruff check services workers schemas tests benchmarks
	$(BIN)/ruff format --check services workers schemas tests benchmarks
	$(BIN)/mypy services workers schemas

.PHONY: install run demo test test-e2e lint check
