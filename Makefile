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

.PHONY: install browser demo test ui lint clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m pipelines.demo $(DEMO_ARGS)

# The end-to-end test drives the UI in headless Chromium: Debian's chromium and chromium-driver, installed
# here when missing (root with apt-get, as on a fresh Debian machine or CI); elsewhere one line says what to do.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver for the browser test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "make test needs Chromium and ChromeDriver: run 'apt-get install chromium chromium-driver' as root (Debian's packages)" >&2; \
	    exit 1; \
	  fi; \
	fi

test: install browser
	$(BIN)/pytest $(PYTEST_ARGS)

ui: install
	$(BIN)/python -m pipelines.instance "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf "$(AESTHETIC_HOME)"
