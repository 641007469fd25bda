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
.PHONY: help install kernels train eval export bench sweep report data test test-fast gpu-check lint format clean

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

gpu-check: $(STAMP)  ## on a CUDA machine: GPU tests, then a short GPU speed run
	$(BIN)/python -m pytest -m gpu -rs $(ARGS)
	$(BIN)/python -m fastff.bench device=cuda mode=paper_fig3 modes.paper_fig3.max_depth=11 \
		'modes.paper_fig3.batch_sizes=[1,256]' 'implementations=[ff,fff,moe]' wandb.mode=disabled

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP)  ## ruff autofix and format
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:  ## remove caches and outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
