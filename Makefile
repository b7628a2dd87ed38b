# Two commands set everything up on a fresh machine: `make demo` and `make test` (README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export AESTHETIC_HOME ?= $(CURDIR)/.aesthetic
export AESTHETIC_RAW ?= $(AESTHETIC_HOME)/raw
export DAGSTER_HOME ?= $(AESTHETIC_HOME)/dagster
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo test ui lint bench clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m pipelines.demo $(DEMO_ARGS)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

ui: install
	$(BIN)/python -m pipelines.instance "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf "$(AESTHETIC_HOME)"
