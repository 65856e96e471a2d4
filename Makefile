# initlab: `make study` runs the default study, `make test` runs the tests. Both set up .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup study test ui
setup: $(VENV)/.installed

# Every dependency at the exact version and hashes of requirements.lock; initlab itself on top,
# its source byte-compiled (read, where PYTHONDONTWRITEBYTECODE keeps Python from writing it:
# each stage's process then starts without compiling the modules it imports).
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.3
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m compileall -q src
	touch $@

# Refresh requirements.lock from pyproject.toml: keeps the locked versions that still satisfy
# it; `make lock UPGRADE=--upgrade` takes the newest the index has.
.PHONY: lock
lock: setup
	$(BIN)/pip install --quiet uv==0.13.9
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(UPGRADE) -o requirements.lock

study: setup
	dvc repro

# Two workers; the tests that share a built study run on one (their xdist_group).
test: setup
	python -m pytest -n 2 --dist loadgroup

ui: setup
	python -m initlab.ui

# The stale cells on a Ray cluster, DVC still the record (README, "Beyond one machine")
.PHONY: distribute
distribute: setup
	python -m initlab.distribute $(ARGS)

# A team's MLflow: PostgreSQL + `mlflow server` on 127.0.0.1 (docs/mlflow.md, "A team's record")
.PHONY: server
server: setup
	python -m initlab.server $(ARGS)

.PHONY: bench bench-quick
bench: setup
	dvc repro prepare
	python -m initlab.bench

bench-quick: setup
	dvc repro prepare
	python -m initlab.bench --quick
