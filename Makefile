# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes. Every extra (`all`), so the tests of
# optional features (the plots) run instead of skipping.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[test,all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/textgen train --config quick --overwrite
	$(BIN)/textgen generate --model runs/quick/model.keras --seed "ROMEO:" --length 400 --temperature 0.8 --random-seed 1

# Tests run in parallel processes, one per core (at most 4: each holds its own TensorFlow).
PARALLEL = -n auto --maxprocesses=4

# `make test` is the suite without the tests marked slow (SIGKILL matrices, multi-process
# training, long generation), which `make test-slow` runs; CI (.ci/run) runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m slow

clean:
	rm -rf $(VENV) runs build *.egg-info
