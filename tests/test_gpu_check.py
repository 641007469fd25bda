"""``make gpu-check`` (tools/gpu_check.py) without a GPU: the GPU run's own settings compose and
validate here, and the wheels it installs are the versions tested here.

The dry run (``GPU_CHECK_DRY_RUN=1 make gpu-check PYTHON=.venv/bin/python``) runs every step on
the CPU; these tests check what only the GPU run uses (its overrides differ from the dry run's).
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
from make_recipes import make_commands
from pipeline_utils import compose_config

from fastff.bench import runner

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402


def _overrides(command: list[str], entry: str) -> list[str]:
    """The Hydra overrides of one step's command (after ``-m <entry>``), run dir excluded."""
    start = command.index(entry) + 1
    return [a for a in command[start:] if not a.startswith("hydra.run.dir=")]


@pytest.mark.parametrize("dry", [False, True])
def test_every_step_composes_and_validates(dry, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU run's device=cuda
    steps = gpu_check.steps(dry)
    assert [step[0] for step in steps][:2] == ["pytest", "bench_paper_fig3"]
    assert sum(step[1] for step in steps) <= gpu_check.TOTAL_S <= 8 * 60
    seen = set()
    for name, _, command, _ in steps:
        if "fastff.bench" in command:
            cfg = compose_config("bench", _overrides(command, "fastff.bench"), tmp_path / name)
            runner.validate(cfg)
            if not dry:
                assert cfg.device == "cuda" and cfg.dtype == "bfloat16"
                assert cfg.fff_strategy == "triton" and cfg.check.oracle_rows > 0
            seen.add("bench")
        elif "fastff.train" in command:
            cfg = compose_config("train", _overrides(command, "fastff.train"), tmp_path / name)
            assert cfg.trainer.precision == ("bf16-mixed" if not dry else 32)
            assert cfg.data.get("name", "digits") == "digits" or "digits" in str(cfg.data)
            seen.add("train")
        elif "pytest" in command:
            tests = [a for a in command if a.startswith("tests/")]
            assert tests and all((REPO / t).is_file() for t in tests)
            seen.add("pytest")
        else:
            assert (REPO / command[1]).is_file()  # tools/gpu_measure.py
    assert seen == {"bench", "train", "pytest"}
    fig3 = next(step[2] for step in steps if step[0] == "bench_paper_fig3")
    if not dry:
        assert "modes.paper_fig3.max_depth=13" in fig3
        assert "modes.paper_fig3.batch_sizes=[1,256]" in fig3


def test_gpu_wheels_pin_the_versions_tested_here():
    words = [word for command in make_commands("gpu-wheels") for word in command]
    pinned = dict(word.split("==") for word in words if "==" in word)
    assert set(pinned) == {"hydra-core", "omegaconf", "antlr4-python3-runtime"}
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version, name


@pytest.mark.parametrize(
    ("dry", "cuda", "wheels", "expected"),
    [
        (False, False, True, "error: make gpu-check needs a CUDA GPU"),
        (True, False, False, "error: no wheels in "),
        (False, True, False, "error: no wheels in "),
        (True, False, True, None),
        (False, True, True, None),
    ],
)
def test_the_check_refuses_in_one_line_before_writing(
    dry, cuda, wheels, expected, tmp_path, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(gpu_check, "WHEELS", tmp_path)
    if wheels:
        (tmp_path / "hydra_core-1.3.8-py3-none-any.whl").write_bytes(b"")
    line = gpu_check.refusal(dry)
    if expected is None:
        assert line is None
    else:
        assert line.startswith(expected) and "\n" not in line
