# bloodseg: every target installs what it needs first (the install stamp), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bloodseg-installed
ARGS ?=

.PHONY: install train smoke test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install bloodseg with its pinned torch

train: $(STAMP) ## the paper's protocol on the built-in synthetic smears (ARGS=... for overrides)
	$(BIN)/python -m bloodseg.train experiment=segnet_vgg16 $(ARGS)

smoke: $(STAMP) ## the same pipeline in about a minute on a CPU
	$(BIN)/python -m bloodseg.train experiment=segnet_vgg16 debug=smoke $(ARGS)

test: $(STAMP) ## the whole test suite
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check bloodseg tests
	$(BIN)/python -m ruff format --check bloodseg tests

clean:
	rm -rf outputs multirun wandb lightning_logs .pytest_cache
