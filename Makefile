# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow check install clean

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
# training, long generation, more fresh-process spellings of cases it covers once), which
# `make test-slow` runs; CI (.ci/run) runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m slow

# `make check` is the edit loop's subset, under 2 minutes on 2 cores: `make test` without the
# end-to-end files, which start processes, servers or browsers, export, or train and decode
# through the CLI. A new test file is in it until listed here.
CHECK_SKIPS = bad_input bad_input_process cli distribute export export_labels export_seq2seq export_tflite \
	export_word_graph generate generate_cli json_errors label_generation label_training package quiet \
	run_directory seq2seq_decoding seq2seq_workflow serve_browser serve_http train training_workflow \
	architectures averaging config_paths_cli serve_engine serve_labels tensorboard word_model same_letters
check: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow" $(foreach name,$(CHECK_SKIPS),--ignore=tests/test_$(name).py)

clean:
	rm -rf $(VENV) runs build *.egg-info
