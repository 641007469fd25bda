# fastff make targets. `make help` lists them.
PYTHON ?= python3
# W&B's sweep engine, installed without its declared numpy<2 (it runs with numpy 2; its real
# runtime dependencies are in pyproject.toml). Keep in step with fastff.sweep.SWEEPS_VERSION.
SWEEPS_PIN := sweeps==0.3.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install kernels train eval export bench sweep report data test test-fast gpu-check gpu-wheels lint format clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "$(SWEEPS_PIN)"
	touch $(STAMP)

install: $(STAMP)  ## create .venv, install fastff with dev extras, build the C++ CPU kernel (quick when done)
	@$(BIN)/python -m fastff.layers.kernels build --best-effort

kernels: $(STAMP)  ## build the fused C++ CPU kernel for FFF inference now (fails on a build error)
	$(BIN)/python -m fastff.layers.kernels build

train: install  ## train the default experiment (FFF on digits); extra Hydra overrides via ARGS="..."
	$(BIN)/python -m fastff.train $(ARGS)

eval: install  ## evaluate a checkpoint: make eval ARGS="ckpt_path=outputs/.../last.ckpt"
	$(BIN)/python -m fastff.eval $(ARGS)

export: install  ## export a checkpoint's hard path: make export ARGS="ckpt_path=... format=onnx output=model.onnx"
	$(BIN)/python -m fastff.export $(ARGS)

bench: $(STAMP)  ## inference-speed benchmark (FFF vs FF vs MoE vs reference); ARGS="mode=table1"
	$(BIN)/python -m fastff.bench $(ARGS)

sweep: $(STAMP)  ## run (or resume) a W&B sweep file locally: make sweep SWEEP=sweeps/table1_digits.yaml ARGS="--jobs 2"
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=sweeps/<name>.yaml [ARGS=\"--jobs 2\"]"; exit 2; }
	$(BIN)/python -m fastff.sweep $(SWEEP) $(ARGS)

report: $(STAMP)  ## the paper's tables and figures from runs and benchmarks: make report ARGS="outputs/sweeps/table1_digits -o outputs/report"
	$(BIN)/python -m fastff.report $(ARGS)

data: $(STAMP)  ## download the paper's datasets into data/ (needs internet)
	$(BIN)/python -m fastff.data.fetch $(ARGS)

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# The wheels a GPU machine without a package index lacks (pure Python, Python 3.12); antlr4 is
# published as a source archive only, so pip builds its wheel here.
GPU_WHEEL_PINS := hydra-core==1.3.8 omegaconf==2.3.1
GPU_WHEEL_BUILT := antlr4-python3-runtime==4.9.3

gpu-wheels:  ## save the wheels the GPU machine lacks (hydra-core, omegaconf, antlr4) in gpu-wheels/ (needs a package index)
	mkdir -p gpu-wheels
	$(PYTHON) -m pip download --quiet --only-binary=:all: --python-version 3.12 --no-deps \
		-d gpu-wheels $(GPU_WHEEL_PINS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w gpu-wheels $(GPU_WHEEL_BUILT)
	@ls gpu-wheels

gpu-check:  ## on a CUDA machine with no index (after make gpu-wheels): GPU tests, benchmark, crossover, GPU training -> gpu-results.tar.gz (GPU_CHECK_DRY_RUN=1: on the CPU)
	$(PYTHON) tools/gpu_check.py

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP)  ## ruff autofix and format
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:  ## remove caches and outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
