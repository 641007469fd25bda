"""A default ``make train`` run's stderr holds nothing but fastff's own lines: Lightning's
start-up and checkpoint notices, W&B's settings warning and DDP's unused-parameter warnings stay
off the terminal (the notices are kept in the run's log file)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastff.hydra_app import _ConsoleFilter
from fastff.layers import FFF, MoE
from fastff.training.builders import resolve_unused_parameters

FASTFF_PREFIXES = ("error:", "warning:", "fastff:")
"""How every line fastff itself writes to stderr begins."""


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # W&B offline, as default
    return subprocess.run(
        [sys.executable, "-m", "fastff.train", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _foreign_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(FASTFF_PREFIXES)
    ]


def test_default_run_prints_only_fastffs_lines_on_stderr(tmp_path: Path):
    proc = _train(tmp_path, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _foreign_lines(proc.stderr) == []
    log = (tmp_path / "run" / "train.log").read_text()
    # routed to the run's log file, not dropped
    assert "GPU available:" in log and "Restoring states from the checkpoint path" in log
    assert "G_A" in proc.stdout  # the summary table


@pytest.mark.slow
def test_ddp_cpu_run_prints_no_ddp_or_lightning_notices(tmp_path: Path):
    proc = _train(tmp_path, "trainer=ddp_cpu", "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _foreign_lines(proc.stderr) == []
    assert "find_unused_parameters" not in proc.stdout + proc.stderr
    assert (
        "Initializing distributed: GLOBAL_RANK: 0" in (tmp_path / "run" / "train.log").read_text()
    )


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("name", "level", "message", "shown"),
    [
        (
            "lightning.pytorch.utilities.rank_zero",
            logging.INFO,
            "GPU available: False, used: False",
            False,
        ),
        (
            "lightning.fabric.utilities.distributed",
            logging.INFO,
            "Initializing distributed: X",
            False,
        ),
        (
            "lightning.pytorch.utilities.rank_zero",
            logging.INFO,
            "-----\ndistributed_backend=gloo",
            False,
        ),
        ("lightning.pytorch.utilities.rank_zero", logging.INFO, "Epoch 3: a new message", True),
        (
            "lightning.pytorch.utilities.rank_zero",
            logging.WARNING,
            "GPU available: but a warning",
            True,
        ),
        ("fastff", logging.INFO, "GPU available: (fastff's own)", True),
        ("py.warnings", logging.WARNING, "x.py:1: UserWarning: something actionable", True),
        ("py.warnings", logging.WARNING, "x.py:1: DeprecationWarning: deprecated", False),
    ],
)
def test_console_filter_is_precise(name, level, message, shown):
    assert _ConsoleFilter().filter(_record(name, level, message)) is shown


def _trainer_cfg(value):
    return OmegaConf.create(
        {
            "strategy": {
                "_target_": "lightning.pytorch.strategies.DDPStrategy",
                "find_unused_parameters": value,
            }
        }
    )


@pytest.mark.parametrize(
    ("value", "model", "expected"),
    [
        ("auto", FFF(4, 2, 1, 2), False),
        ("auto", MoE(4, 2, 4, 2, k=1), True),
        (True, FFF(4, 2, 1, 2), True),
        (False, MoE(4, 2, 4, 2, k=1), False),
    ],
)
def test_find_unused_parameters_auto_is_on_only_for_moe(value, model, expected):
    cfg = _trainer_cfg(value)
    resolve_unused_parameters(cfg, model)
    assert cfg.strategy.find_unused_parameters is expected
