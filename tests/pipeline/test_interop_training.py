"""The real command line with mixed precision, EMA weights and a compiled model, on digits.

Each run is a few epochs; the comparison run is float32 eager with the same seed. The accuracy a
run reports is recomputed from its checkpoint independently (plain PyTorch over the test split).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pipeline_utils import run_cli

from fastff.training.checkpoint import load_model, read_checkpoint

QUICK = ("logger=none", "callbacks.rich_progress_bar=null")
FLAT = ("trainer.max_epochs=5",)
# a small ViT (one block, embed dim 32) that learns digits in a few epochs
VIT = (
    "model=vit",
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "layer.leaf_width=8",
    "log_soft_accuracy=false",
    "trainer.max_epochs=12",
    "optimizer.lr=0.003",
)
BACKBONES = {"flat": FLAT, "vit": VIT}


def _train(root: Path, name: str, *overrides: str, trainer: str = "trainer=cpu") -> dict:
    run_dir = root / name
    proc = run_cli(
        "fastff.train", *QUICK, trainer, *overrides, f"hydra.run.dir={run_dir}", cwd=root
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def float32_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("float32")
    return {name: _train(root, name, *args) for name, args in BACKBONES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_bf16_mixed_training_finishes_close_to_float32(backbone, float32_runs, tmp_path):
    metrics = _train(tmp_path, "bf16", *BACKBONES[backbone], "trainer.precision=bf16-mixed")
    reference = float32_runs[backbone]
    assert metrics["status"] == "finished"
    assert metrics["config"]["trainer"]["precision"] == "bf16-mixed"
    assert metrics["G_A"] > 40.0  # learned (chance is 10%)
    assert abs(metrics["G_A"] - reference["G_A"]) <= 5.0, (metrics["G_A"], reference["G_A"])
    assert abs(metrics["M_A"] - reference["M_A"]) <= 5.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_mixed_precision_on_cuda_finishes_close_to_float32(
    backbone, precision, float32_runs, tmp_path
):
    overrides = (*BACKBONES[backbone], f"trainer.precision={precision}")
    metrics = _train(tmp_path, "cuda", *overrides, trainer="trainer=gpu")
    assert metrics["status"] == "finished"
    assert abs(metrics["G_A"] - float32_runs[backbone]["G_A"]) <= 5.0


def _test_accuracy(model: torch.nn.Module, run_dir: Path) -> float:
    """Test accuracy in percent of ``model`` on the run's test split, in plain PyTorch."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("test")
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_tested(tmp_path):
    metrics = _train(tmp_path, "ema", *FLAT, "callbacks=ema", "callbacks.ema.decay=0.9")
    assert metrics["status"] == "finished"
    assert metrics["evaluated_weights"] == "ema" and metrics["ema_decay"] == 0.9
    best = Path(metrics["checkpoint"])
    checkpoint = read_checkpoint(best, "cpu")
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    # G_A is the EMA weights' test accuracy, recomputed from the checkpoint
    ema_model = load_model(best)
    assert _test_accuracy(ema_model, tmp_path / "ema") == pytest.approx(metrics["G_A"], abs=1e-3)


@pytest.mark.slow
def test_compiled_model_trains_like_eager(float32_runs, tmp_path):
    metrics = _train(tmp_path, "compiled", *FLAT, "model.compile=true")
    reference = float32_runs["flat"]
    assert metrics["status"] == "finished"
    assert abs(metrics["G_A"] - reference["G_A"]) <= 3.0, (metrics["G_A"], reference["G_A"])
    # checkpoints keep the plain parameter names
    model = load_model(Path(metrics["checkpoint"]))
    assert _test_accuracy(model, tmp_path / "compiled") == pytest.approx(metrics["G_A"], abs=1e-3)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("transformer-engine", "needs NVIDIA's transformer_engine package"),
        ("bogus", "Precision 'bogus' is invalid"),
    ],
)
def test_a_precision_this_machine_cannot_run_is_one_line(precision, expected, tmp_path):
    proc = run_cli(
        "fastff.train",
        *QUICK,
        "trainer=cpu",
        "debug=fast_dev_run",
        f"trainer.precision={precision}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and "trainer" in lines[0], proc.stderr
