# Quickstart targets: each creates its own virtualenv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a CUDA machine run `make TORCH_SPEC=torch demo`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint venv clean

$(BIN)/elworld: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,doom,rl,screen]"
	touch $(BIN)/elworld

venv: $(BIN)/elworld

## Run the dream from the bundled checkpoint: a window with a display, a video without.
demo: venv
	$(BIN)/elworld demo

## Run the linter and the whole test suite.
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
