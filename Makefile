# initlab: `make study` runs the default study, `make test` runs the tests. Both set up .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup study test ui
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

study: setup
	dvc repro

# Two workers; the tests that share a built study run on one (their xdist_group).
test: setup
	python -m pytest -n 2 --dist loadgroup

ui: setup
	python -m initlab.ui

.PHONY: bench bench-quick
bench: setup
	python -m initlab.bench

bench-quick: setup
	python -m initlab.bench --quick
