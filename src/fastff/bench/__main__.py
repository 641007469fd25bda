"""Hydra entry point of the speed benchmark: ``python -m fastff.bench mode=paper_fig3``.

Modes: ``paper_fig3`` (the paper's Figures 3-4), ``table1`` (Table 1's speedup column) and
``train`` (soft forward + backward). Writes ``bench_<mode>.csv`` and PNG plots into the Hydra run
dir and logs them to W&B (offline by default). See ``conf/bench.yaml`` for every setting.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fastff.hydra_app import exit_on_user_error, hydra_entry


@hydra_entry("bench")
def main(cfg: DictConfig) -> None:
    """Console script ``fastff-bench``: run the configured mode in this run's output dir."""
    from fastff.bench.runner import run, validate

    exit_on_user_error(lambda: validate(cfg), (ValueError,))
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
