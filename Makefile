# Two commands matter: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format build bench sysdeps-run sysdeps-test sysdeps-bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || PYTHON=$(PYTHON) deploy/install-system-packages.sh venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

static/node_modules/.package-lock.json: static/package.json static/package-lock.json
	@deploy/install-system-packages.sh build
	cd static && npm ci --no-audit --no-fund --loglevel=error

build: static/node_modules/.package-lock.json
	cd static && npm run --silent build

sysdeps-run sysdeps-test sysdeps-bench: sysdeps-%:
	@deploy/install-system-packages.sh $*

run: $(STAMP) build sysdeps-run
	$(BIN)/python -m devtools.run_local

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) build sysdeps-test lint
	$(BIN)/pytest

bench: $(STAMP) build sysdeps-bench
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) static/node_modules static/dist test-artifacts
