# Set-up and common tasks. A GPU user picks another torch build, e.g.
#   make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: install train test test-slow lint format clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[dev]" "$(TORCH_SPEC)"

train:
	$(BIN)/hdrunet-train experiment=demo

test:
	WANDB_MODE=offline $(BIN)/python -m pytest -q

test-slow:
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m slow

lint:
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format:
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf logs .pytest_cache build dist src/*.egg-info
