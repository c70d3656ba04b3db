# Rootward's two commands: `make demo` and `make test`. Both set up .venv on first use (or when pyproject changes).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STAGES := receiver topology detector agent actions policies

.PHONY: demo test lint typecheck layers unit fmt bench venv layout clean

# The Cython kernels are compiled by the (editable) install: reinstall when they change.
$(STAMP): pyproject.toml receiver/_wire.pyx topology/_index.pyx
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rootward demo

test: lint unit

# ruff, mypy (strict) and import-linter (the layers of DESIGN.md).
lint: $(STAMP) layout
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .layout/rootward
	cd .layout && PYTHONPATH=. ../$(BIN)/lint-imports ../pyproject.toml

unit: $(STAMP)
	$(BIN)/pytest

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run.py

# The installed package maps receiver/ to rootward.receiver etc. (pyproject package-dir). mypy and import-linter
# read packages from disk, so they get the same tree as links under .layout/rootward.
layout:
	@rm -rf .layout && mkdir -p .layout/rootward
	@for f in rootward/*.py rootward/py.typed; do ln -s ../../$$f .layout/rootward/; done
	@for s in $(STAGES); do mkdir -p .layout/rootward/$$s; \
	  for f in $$s/*.py $$s/*.pyi; do if [ -e $$f ]; then ln -s ../../../$$f .layout/rootward/$$s/; fi; done; done

clean:
	rm -rf .layout .mypy_cache .ruff_cache .pytest_cache build *.egg-info receiver/_wire.c receiver/*.so topology/_index.c topology/*.so
