# Two entry points for a fresh machine: `make demo` (the main job: the seed papers' claims that a
# CPU can test in ~5 minutes, with verdicts) and `make test` (the suite).
# Each creates .venv and installs what it needs. On the reference CPU machine `torch==2.13.0`
# resolves to a local CPU wheel; elsewhere override with `make TORCH_SPEC=torch ...`.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test test-min test-compat lint docs install clean docs-check

# samkit and what it needs to run (the demo); then the development tools on top (the suite).
$(VENV)/.base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.base
	$(BIN)/pip install -q -e ".[dev,lightning,transformers]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.base
	$(BIN)/samkit reproduce --quick --claims demo --jobs 2 --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n 2

lint: install
	$(BIN)/ruff check samkit tests benchmarks
	$(BIN)/mypy

# The guides and the API reference from the docstrings, into build/site (offline; a warning fails).
# The suite builds it too (tests/test_api_docs.py), so CI checks it.
docs: install
	$(BIN)/mkdocs build --strict

# The compatibility matrix (docs/compatibility.md): the default suite in one cached environment per
# row (.venv-compat/<row>) — torch 2.5 to the newest, Python 3.11-3.13, every dependency at its lower
# bound — then the page, written from the runs' JUnit files. Run on purpose and before a release, not
# by CI: the torch builds other than 2.13.0 are CUDA builds from the package index (~5 GB a row).
# `make test-compat ROWS="torch2.5-lowest py3.13"` runs some; `make test-min` the two lowest-version rows.
ROWS ?=
test-compat:
	$(PY) tests/compat_matrix.py run $(ROWS)

test-min:
	$(PY) tests/compat_matrix.py run torch2.5-lowest torch2.6-extras-lowest

clean:
	rm -rf $(VENV) .venv-compat runs

# Every page of the built site in headless Chromium (tools/docs/check.py): opened from disk with no
# network, no console error, no sideways scroll at 1280 and 390 px, formulas drawn as MathML, the
# search finding pages. Chromium comes from Debian's packages, installed here if missing.
docs-check: docs
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -q && \
		  $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -q chromium; }
	$(BIN)/python tools/docs/check.py build/site
