# Two commands matter on a fresh machine: `make demo` and `make test`.
# Everything they need (the venv, pip packages, Azurite from npm) is installed here.

PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CHECKOV_VENV := .venv-checkov
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup native browser demo test lint typecheck pytest bench bench-smoke bench-scale clean

help:
	@echo "make demo   - set up, start the ActiveCampaign sandbox and export a sample segment"
	@echo "make test   - set up and run ruff, mypy and the whole test suite"
	@echo "make bench  - run the benchmarks and write bench/RESULTS.md (takes a while)"
	@echo "make bench-scale - 10M contacts, every phase's peak RSS (bench/RESULTS-scale.md, ~10 min)"

# Fall back to python3 when python3.11 is not on PATH (it must still be 3.11).
$(VENV)/.stamp: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "using python3 ($$(python3 --version))"; }
	@if command -v $(PYTHON) >/dev/null 2>&1; then $(PYTHON) -m venv $(VENV); else python3 -m venv $(VENV); fi
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	@touch $@

$(CHECKOV_VENV)/.stamp: requirements-checkov.txt
	@if command -v $(PYTHON) >/dev/null 2>&1; then $(PYTHON) -m venv $(CHECKOV_VENV); else python3 -m venv $(CHECKOV_VENV); fi
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	@touch $@

# prepare's optional C speed-ups (exporter/native): built in place with the machine's C compiler
# and the Python headers. Without them prepare runs in pure Python, with the same results.
NATIVE := exporter/native/.built
$(NATIVE): exporter/native/_speedups.c setup.py $(VENV)/.stamp
	@rm -f $@
	@if $(PY) setup.py --quiet build_ext --inplace >$(VENV)/native-build.log 2>&1; then \
		touch $@; else echo "note: prepare's C speed-ups were not built (see $(VENV)/native-build.log)"; fi
	@rm -rf build

native: $(NATIVE)

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(VENV)/.stamp $(NATIVE) node_modules/.stamp $(CHECKOV_VENV)/.stamp

# The console's browser tests drive the system's headless Chromium (Debian's package; Playwright
# never downloads a browser). Installed here when missing: CI runs as root on a clean machine.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

demo: $(VENV)/.stamp $(NATIVE)
	$(PY) -m examples.demo $(DEMO_ARGS)

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.stamp
	$(VENV)/bin/mypy

# Timing-sensitive tests (several processes pacing against a time-compressed sandbox) run on
# their own after the parallel suite: on a 2-core machine a neighbour's load is jitter they
# would have to absorb, which real time does not have.
pytest: setup browser
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" CHECKOV="$(CURDIR)/$(CHECKOV_VENV)/bin/checkov" \
		$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not serial" $(PYTEST_ARGS)
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(PY) -m pytest -p no:xdist -m serial $(PYTEST_ARGS)

test: lint typecheck pytest

bench: setup
	$(PY) -m bench.run --write bench/RESULTS.md

bench-smoke: $(VENV)/.stamp $(NATIVE)
	$(PY) -m bench.run --smoke

bench-scale: setup
	$(PY) -m bench.run --scenario scale --runs 1 --write bench/RESULTS-scale.md

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -f exporter/native/*.so $(NATIVE)
