# made-service: every target creates .venv and installs what it needs on first use.
#   make serve   the service only (.[server]: no test tools)
#   make test    everything (.[dev] = server + train + test and lint tools)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q
# torch is installed first, on its own, so its build can be chosen. On a plain Linux host the default
# index (PyPI) serves the CUDA build (several GB); for the CPU build:
#   make test TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?=
# one stamp per install, so `make serve` never pulls the test tools (and `make test` reuses its torch)
DEV_STAMP := $(VENV)/.installed
SERVER_STAMP := $(VENV)/.installed-server
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: venv serve test lint format train eval examples screenshot bench bench-http gpu-check clean

$(VENV)/.torch:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH_INDEX) "$(TORCH_PIN)"
	touch $@

$(DEV_STAMP): pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[dev]"
	touch $@

$(SERVER_STAMP): pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[server]"
	touch $@

$(TRAIN_STAMP): pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[train]"
	touch $@

venv: $(DEV_STAMP)

serve: $(SERVER_STAMP)
	$(BIN)/python -m service serve

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check service tests bench docker
	$(BIN)/ruff format --check service tests bench docker

format: $(DEV_STAMP)
	$(BIN)/ruff format service tests bench docker
	$(BIN)/ruff check --fix service tests bench docker

# make train DATA=mnist ARGS="--epochs 200"
DATA ?= mnist
train: $(TRAIN_STAMP)
	$(BIN)/python -m service.training train --preset $(DATA) $(ARGS)

# make eval MODEL=models/faces: the card names the data set and file (ARGS="--data PATH" overrides)
MODEL ?= models/mnist
eval: $(TRAIN_STAMP)
	$(BIN)/python -m service.training eval $(MODEL) $(ARGS)

# make examples MODEL=models/faces: rewrite the folder's held-out examples/ (up to 8 test-split PNGs) from
# the data its card names; ARGS=--pictures also redraws samples.png and completions.png from its weights
examples: $(TRAIN_STAMP)
	$(BIN)/python -m service.training examples $(MODEL) $(ARGS)

# docs/img/demo-page.png redrawn from the committed models: the demo page in headless /usr/bin/chromium with
# faces, fixed seeds, temperature 1 (python -m tests.web.screenshot --help; ARGS="--out /tmp/page.png")
screenshot: $(DEV_STAMP)
	$(BIN)/python -m tests.web.screenshot --out docs/img/demo-page.png $(ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.engine $(ARGS)

# the serving path against a minimal floor app, driven by hey (installed from Debian if missing)
bench-http: $(DEV_STAMP)
	$(BIN)/python -m bench.http $(ARGS)

# on a CUDA machine: exactness and throughput on the GPU, written to bench/GPU.md
gpu-check: $(DEV_STAMP)
	$(BIN)/python -m bench.gpu $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
