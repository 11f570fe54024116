# The two commands: `make run` (set up, run the main job) and `make test` (set up, run tests).
# Both work on a fresh machine: they create .venv, install the project and, as root on
# Debian/Ubuntu, the Fashion-MNIST package.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.smartaug-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data cifar10-mini up run serve serve-pg stop test test-fast bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing smartaug and its dependencies into $(VENV) (log: $(VENV)/pip.log) ..."
	@$(BIN)/pip install --disable-pip-version-check -e '.[dev]' > $(VENV)/pip.log 2>&1 \
	  || { tail -30 $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

# System packages: Fashion-MNIST's IDX files (the default dataset), Chromium (the report's
# browser test) and PostgreSQL (make serve-pg, and the server-under-load test). Installed with
# apt as root; elsewhere, how to get them is printed.
data:
	@missing=""; \
	if [ -z "$$SMARTAUG_DATA" ] && [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then missing="dataset-fashion-mnist"; fi; \
	if ! command -v chromium >/dev/null 2>&1; then missing="$$missing chromium"; fi; \
	if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  missing="$$missing postgresql"; fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "Missing:$$missing (not root on Debian/Ubuntu, so not installed)."; \
	  echo "  Fashion-MNIST: sudo apt-get install dataset-fashion-mnist, or put the four"; \
	  echo "  *-ubyte.gz files in a directory and export SMARTAUG_DATA=DIR, or stay online"; \
	  echo "  (torchvision downloads them). Chromium: only the report's browser test needs it."; \
	  echo "  PostgreSQL: only make serve-pg and the server-under-load test need it."; \
	fi

setup: $(STAMP) data

# The CIFAR-10 subset the committed CIFAR-10 results ran on (1000 train and 200 test JPEGs a
# class, an ImageFolder), unpacked into data/cifar10-mini/, where their study files look for it
# (or wherever SMARTAUG_CIFAR10_MINI says). CIFAR10_MINI_TAR: the archive.
CIFAR10_MINI_TAR ?= ../shared/data/cifar10-mini.tar.gz
cifar10-mini:
	@if [ -d data/cifar10-mini/train ]; then echo "data/cifar10-mini is there"; exit 0; fi; \
	if [ ! -f "$(CIFAR10_MINI_TAR)" ]; then \
	  echo "no $(CIFAR10_MINI_TAR): give CIFAR10_MINI_TAR=path/to/cifar10-mini.tar.gz"; exit 2; fi; \
	mkdir -p data && tar -xzf "$(CIFAR10_MINI_TAR)" -C data && echo "data/cifar10-mini: ready"

# Prefect: an embedded server on 127.0.0.1 (SQLite under .prefect/) and the serve process,
# started in the background when not already up; `make stop` stops them by pid.
PREFECT_PORT ?= 4200
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_API_URL := http://127.0.0.1:$(PREFECT_PORT)/api
export PREFECT_RUNNER_POLL_FREQUENCY := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# the server streams run logs to `prefect deployment run ... --watch` (off by default)
export PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED := true
export PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED := true
HEALTHY := $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(PREFECT_API_URL)/health', timeout=2)" 2>/dev/null

up: setup
	@mkdir -p $(PREFECT_HOME)
	@if ! $(HEALTHY) && [ -n "$$PREFECT_API_DATABASE_CONNECTION_URL" ]; then \
	  $(BIN)/python -m smartaug.flows.database check || exit 2; \
	fi
	@if ! $(HEALTHY); then \
	  db="SQLite in $(PREFECT_HOME)"; [ -n "$$PREFECT_API_DATABASE_CONNECTION_URL" ] && db="$$PREFECT_API_DATABASE_CONNECTION_URL"; \
	  echo "Starting the Prefect server on 127.0.0.1:$(PREFECT_PORT) ($$db) ..."; \
	  nohup $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) \
	    > $(PREFECT_HOME)/server.log 2>&1 & echo $$! > $(PREFECT_HOME)/server.pid; \
	  for i in $$(seq 1 120); do $(HEALTHY) && break; sleep 1; done; \
	  $(HEALTHY) || { echo "The Prefect server did not start:"; tail -20 $(PREFECT_HOME)/server.log; exit 1; }; \
	fi
	@if [ ! -f $(PREFECT_HOME)/serve.pid ] || ! kill -0 $$(cat $(PREFECT_HOME)/serve.pid) 2>/dev/null; then \
	  echo "Serving the deployments (log: $(PREFECT_HOME)/serve.log) ..."; \
	  nohup $(BIN)/python -m smartaug.flows.serve > $(PREFECT_HOME)/serve.log 2>&1 & echo $$! > $(PREFECT_HOME)/serve.pid; \
	fi
	@for i in $$(seq 1 120); do \
	  $(BIN)/prefect deployment inspect smart-augmentation/smart-augmentation >/dev/null 2>&1 && break; sleep 1; \
	done

# The main job: the quick preset (Fashion-MNIST, 1000 train images per class, the full test
# set, LeNet-5, M0/M1/M2 over 3 seeds) as a run of the Prefect deployment.
run: up
	$(BIN)/prefect deployment run smart-augmentation/smart-augmentation -p preset=quick --watch
	@echo "Report: $(CURDIR)/$$(ls -td storage/reports/*/ | head -1)report.html"
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (make stop stops the server and the serve process)"

# The server in the background, the deployments in the foreground (Ctrl-C to stop serving).
serve: setup
	@$(MAKE) --no-print-directory up
	@kill $$(cat $(PREFECT_HOME)/serve.pid 2>/dev/null) 2>/dev/null; rm -f $(PREFECT_HOME)/serve.pid
	$(BIN)/python -m smartaug.flows.serve

# The same with the Prefect server on PostgreSQL (for many workers: SQLite serialises writes):
# a local cluster in .prefect/postgres on 127.0.0.1:$(PG_PORT), started when not running.
# Stop a server already running on SQLite first (make stop): it is reused otherwise.
PG_PORT ?= 5433
PG_DATA := $(PREFECT_HOME)/postgres
serve-pg: setup
	@url=$$($(BIN)/python -m smartaug.flows.database start --data $(PG_DATA) --port $(PG_PORT)) || exit 2; \
	echo "PostgreSQL on 127.0.0.1:$(PG_PORT) (data: $(PG_DATA)): $$url"; \
	PREFECT_API_DATABASE_CONNECTION_URL=$$url $(MAKE) --no-print-directory serve

stop:
	@for p in serve server; do \
	  if [ -f $(PREFECT_HOME)/$$p.pid ]; then kill $$(cat $(PREFECT_HOME)/$$p.pid) 2>/dev/null && echo "stopped $$p"; rm -f $(PREFECT_HOME)/$$p.pid; fi; \
	done
	@if [ -f $(PG_DATA)/postmaster.pid ]; then $(BIN)/python -m smartaug.flows.database stop --data $(PG_DATA); fi

# Every test, real servers included, on one pytest-xdist worker per core; a module's tests stay
# on one worker (--dist loadfile), so a module's server, lake or tour is made once, and the
# longest modules start first (tests/conftest.py orders them; --no-loadscope-reorder keeps it).
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# For iterating on a change (under 2 minutes): no end-to-end run marked slow, no PostgreSQL.
test-fast: setup
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder -m "not slow and not postgres"

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
