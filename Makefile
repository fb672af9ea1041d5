# Set-up and common tasks. The default is torch's CPU build, named by its local version
# (+cpu): pip takes it from a wheel folder or index that has it (on a machine that gets
# torch from PyPI only, add TORCH_INDEX=https://download.pytorch.org/whl/cpu), never
# PyPI's multi-GB CUDA build by accident. A GPU user picks another build, e.g.
#   make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_INDEX ?=
# litdata declares torchvision as a hard requirement but uses it only for image/video
# serializers this package does not use; PyPI's torchvision is not built for the CPU torch
# and breaks `import torchmetrics`, so litdata is installed without it (its other
# requirements are in pyproject.toml). With a matching torchvision, `pip install litdata`.
LITDATA_SPEC ?= litdata==0.2.76
# cvvdp (PU21 metrics and ColorVideoVDP) likewise: it imports torchvision for one Gaussian
# blur, which hdrunet_pl.perceptual supplies by kornia when torchvision is absent (tested
# against scipy); its other requirements are in pyproject.toml.
CVVDP_SPEC ?= cvvdp==0.5.7
BIN := $(VENV)/bin
SAMPLES ?= .cache/poly_haven_hdri

.PHONY: install train test test-slow lint format clean notebook notebooks bench

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[dev]" "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --no-deps "$(LITDATA_SPEC)" "$(CVVDP_SPEC)"
	$(BIN)/python -m hdrunet_pl.samples $(SAMPLES) > /dev/null  # real HDR photos for the tests

train:
	$(BIN)/hdrunet-train experiment=demo

bench:
	$(BIN)/hdrunet-bench --json bench.json

# JupyterLab is not part of `make install`: this target adds it (the `notebook` extra).
notebook:
	$(BIN)/python -m pip install -q -e ".[notebook]"
	$(BIN)/jupyter lab notebooks/

# Run every notebook top to bottom, headless (nbmake from the `dev` extra); outputs are not saved.
notebooks:
	WANDB_MODE=offline $(BIN)/python -m pytest -q -p no:cacheprovider --nbmake \
		--nbmake-timeout=900 notebooks/

# two test processes (pytest-xdist), a test file per process at a time
test:
	WANDB_MODE=offline $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=10

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
