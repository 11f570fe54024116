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

# The main job as far as the pipeline goes today: Fashion-MNIST (1000 train images per class,
# the full test set, 10 % validation) -> LeNet-5 baseline -> one augmentation per image ->
# AVH scores of the pool and of the originals -> the 2-22 % AVH band and a matched random
# subset -> what the band kept. Every step is found, not redone, on a second run.
SA := $(BIN)/smartaug
run: setup
	@set -e; \
	D=$$($(SA) ingest --dataset fashion-mnist --per-class-train 1000 --val-fraction 0.1 | tail -1); \
	M=$$($(SA) baseline --dataset-id $$D --epochs 5 | tail -1); \
	P=$$($(SA) augment --dataset-id $$D --policy one | tail -1); \
	R=$$($(SA) score --model-id $$M --pool-id $$P | tail -1); \
	$(SA) score --model-id $$M --dataset-id $$D --split train >/dev/null; \
	B=$$($(SA) select --scoring-run-id $$R --band 0.02 0.22 | tail -1); \
	X=$$($(SA) select --scoring-run-id $$R --random-matched $$B | tail -1); \
	echo "dataset $$D  model $$M  pool $$P  scoring run $$R  band $$B  random $$X"; \
	echo "Mean AVH of the originals and of the augmentations, by kind:"; \
	$(SA) sql "select coalesce(a.kind, 'original') as kind, count(*) as n, round(avg(s.avh), 4) as mean_avh, round(avg(s.correct::int), 4) as accuracy from scores s left join augmentations a on a.aug_id = s.item_id join scoring_runs r using (scoring_run_id) where r.model_id = '$$M' group by all order by mean_avh"; \
	echo "What the 2-22 % AVH band kept, by kind (random = the matched random subset):"; \
	$(SA) sql "select s.method, a.kind, count(*) as n from selections s join augmentations a using (aug_id) where s.selection_id in ('$$B', '$$X') group by all order by all"

test: setup
	$(BIN)/python -m pytest

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
