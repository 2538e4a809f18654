# The two commands a new machine needs: `make test` and `make run`. Both create .venv first.
# `make help` lists every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

export SE_OFFLINE := true

.PHONY: help test test-fast run lint bundle bench browser clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)  ## ruff on everything, mypy on blocks/ and graphcore/core/
	$(BIN)/ruff check . && $(BIN)/mypy

# Debian's chromium + chromium-driver for the real-browser tests (they skip, saying why, without them).
browser:  ## install Debian's chromium + chromium-driver when missing (as root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium + chromium-driver are not installed: the real-browser tests will be skipped"

test: lint browser  ## lint, then the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: lint  ## lint, then the tests not marked slow (no browser, no full templates)
	$(BIN)/python -m pytest -q -m "not slow"

run: $(STAMP)  ## start the editor (make run ARGS="--port 9000 my_graph.json")
	$(BIN)/netcanvas $(ARGS)

# The canvas bundle is committed, so users never need Node.js; this rebuilds it after a change in static/src.
bundle:  ## rebuild the canvas bundle (static/src -> app/static/bundle); needs Node.js and npm
	cd static && npm ci --no-audit --no-fund && npx vite build

bench: $(STAMP)  ## the core benchmark against hand-written PyTorch
	$(BIN)/python benchmarks/bench_core.py

clean:  ## remove the virtualenv and build leftovers
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
