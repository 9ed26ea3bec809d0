# Two entry points for a fresh machine: `make demo` (the main job: the seed papers' claims that a
# CPU can test in ~5 minutes, with verdicts) and `make test` (the suite).
# Each creates .venv and installs what it needs. On the reference CPU machine `torch==2.13.0`
# resolves to a local CPU wheel; elsewhere override with `make TORCH_SPEC=torch ...`.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test test-min lint docs install clean docs-check

# samkit and what it needs to run (the demo); then the development tools on top (the suite).
$(VENV)/.base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.base
	$(BIN)/pip install -q -e ".[dev]"
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

# The suite against the lowest versions pyproject.toml allows (tests/min_requirements.py pins them),
# in its own environment. Left out: the tests of the development tools (docs build, type check,
# wheel build, the GPU benchmark suite, which wants pytorch-optimizer: its tested version needs a
# newer numpy, so the comparisons with it skip here), and one that compares report text to the
# digit, which follows scipy's t quantile (it moves in the 11th digit between scipy versions).
MIN_VENV ?= .venv-min
MIN_BIN := $(MIN_VENV)/bin
MIN_SKIP := --ignore=tests/test_api_docs.py --ignore=tests/test_typing.py --ignore=tests/test_packaging.py \
	--ignore=tests/test_gpu_suite.py \
	--deselect tests/study/test_study_claims.py::test_committed_verdict_tables_regenerate_from_their_run_files

$(MIN_VENV)/.installed: pyproject.toml tests/min_requirements.py
	rm -rf $(MIN_VENV)
	$(PY) -m venv $(MIN_VENV)
	$(MIN_BIN)/pip install -q --upgrade pip
	$(MIN_BIN)/pip install -q "$(TORCH_SPEC)"
	$(MIN_BIN)/python tests/min_requirements.py > $(MIN_VENV)/constraints.txt
	$(MIN_BIN)/pip install -q -c $(MIN_VENV)/constraints.txt -e ".[lightning,transformers]" tensorboard \
		pytest pytest-xdist hypothesis
	touch $@

test-min: $(MIN_VENV)/.installed
	$(MIN_BIN)/pip freeze | grep -iE "^(torch|numpy|scipy|matplotlib|pyyaml|tqdm|scikit-learn|lightning|transformers|accelerate|tensorboard)=="
	$(MIN_BIN)/python -m pytest -q -n 2 $(MIN_SKIP)

clean:
	rm -rf $(VENV) $(MIN_VENV) runs

# Every page of the built site in headless Chromium (tools/docs/check.py): opened from disk with no
# network, no console error, no sideways scroll at 1280 and 390 px, formulas drawn as MathML, the
# search finding pages. Chromium comes from Debian's packages, installed here if missing.
docs-check: docs
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -q && \
		  $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -q chromium; }
	$(BIN)/python tools/docs/check.py build/site
