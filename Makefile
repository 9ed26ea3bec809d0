# Two entry points for a fresh machine: `make demo` (the main job: the seed papers' claims that a
# CPU can test in ~5 minutes, with verdicts) and `make test` (the suite).
# Each creates .venv and installs what it needs. On the reference CPU machine `torch==2.13.0`
# resolves to a local CPU wheel; elsewhere override with `make TORCH_SPEC=torch ...`.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/samkit reproduce --quick --claims demo --jobs 2 --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n 2

lint: install
	$(BIN)/ruff check samkit tests benchmarks

clean:
	rm -rf $(VENV) runs
