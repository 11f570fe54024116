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
	@echo "Installing smartaug and its dependencies into $(VENV) (log: $(VENV)/pip.log) ..."
	@$(BIN)/pip install --disable-pip-version-check -e '.[dev]' > $(VENV)/pip.log 2>&1 \
	  || { tail -30 $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

# System packages: Fashion-MNIST's IDX files (the default dataset) and Chromium (the report's
# browser test). Installed with apt as root; elsewhere, how to get them is printed.
data:
	@missing=""; \
	if [ -z "$$SMARTAUG_DATA" ] && [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then missing="dataset-fashion-mnist"; fi; \
	if ! command -v chromium >/dev/null 2>&1; then missing="$$missing chromium"; fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "Missing:$$missing (not root on Debian/Ubuntu, so not installed)."; \
	  echo "  Fashion-MNIST: sudo apt-get install dataset-fashion-mnist, or put the four"; \
	  echo "  *-ubyte.gz files in a directory and export SMARTAUG_DATA=DIR, or stay online"; \
	  echo "  (torchvision downloads them). Chromium: only the report's browser test needs it."; \
	fi

setup: $(STAMP) data

# The main job: the quick preset (Fashion-MNIST, 1000 train images per class, the full test
# set, LeNet-5, M0/M1/M2 over 3 seeds) through the library; prints the report directory last.
run: setup
	$(BIN)/smartaug experiment --preset quick

test: setup
	$(BIN)/python -m pytest

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
