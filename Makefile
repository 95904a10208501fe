# made-service: every target creates .venv and installs on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: venv serve test lint format train eval bench bench-http gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m service serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests bench docker
	$(BIN)/ruff format --check service tests bench docker

format: $(STAMP)
	$(BIN)/ruff format service tests bench docker
	$(BIN)/ruff check --fix service tests bench docker

# make train DATA=mnist ARGS="--epochs 200"
DATA ?= mnist
train: $(STAMP)
	$(BIN)/python -m service.training train --preset $(DATA) $(ARGS)

MODEL ?= models/mnist
eval: $(STAMP)
	$(BIN)/python -m service.training eval $(MODEL) --data ../shared/data/binarized_mnist.npz $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.engine $(ARGS)

# the serving path against a minimal floor app, driven by hey (installed from Debian if missing)
bench-http: $(STAMP)
	$(BIN)/python -m bench.http $(ARGS)

# on a CUDA machine: exactness and throughput on the GPU, written to bench/GPU.md
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
