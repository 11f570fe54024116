# The two commands: `make run` (set up, run the main job) and `make test` (set up, run tests).
# Both work on a fresh machine: they create .venv, install the project and, as root on
# Debian/Ubuntu, the Fashion-MNIST package.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.smartaug-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data run test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

data:
	@if [ -n "$$SMARTAUG_DATA" ] || [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $${SMARTAUG_DATA:-$(FASHION_DIR)}"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian's dataset-fashion-mnist ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "Fashion-MNIST is not installed and this is not root on Debian/Ubuntu."; \
	  echo "  Either: sudo apt-get install dataset-fashion-mnist"; \
	  echo "  or put the four *-ubyte.gz files in a directory and export SMARTAUG_DATA=DIR"; \
	  echo "  or stay online: torchvision downloads them on first use."; \
	fi

setup: $(STAMP) data

run: setup
	$(BIN)/smartaug demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
