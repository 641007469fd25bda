"""``python -m fastff.export`` on trained checkpoints: a flat FFF net on digits and a small ViT with
FFF MLPs, each trained once for this module. The exported files (ONNX Runtime, torch.export)
equal fastff's hard forward and score the test accuracy ``python -m fastff.eval`` reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime  # noqa: F401  (the exported files run in ONNX Runtime)
import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
import pytest
import torch
from hydra.utils import instantiate
from pipeline_utils import run_cli

from fastff import export
from fastff.training.checkpoint import load_model, read_checkpoint, run_config

pytestmark = pytest.mark.slow

QUIET = ("callbacks.rich_progress_bar=null", "logger=none")
RUNS = {
    "flat": ("trainer.max_epochs=3",),
    "vit": (
        "model=vit",
        "model.embed_dim=32",
        "model.depth=2",
        "model.num_heads=2",
        "layer.leaf_width=4",
        "trainer.max_epochs=3",
    ),
}


def _run_all(commands: dict[str, list[str]], cwd: Path) -> None:
    """Run ``python -m <args>`` for every entry at once (the CPU has 2 cores); all must succeed."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    """Per run in RUNS, trained on digits through the CLI: (last.ckpt, the test accuracy that
    ``python -m fastff.eval`` gives it)."""
    root = tmp_path_factory.mktemp("export_runs")
    _run_all(
        {
            name: ["fastff.train", *overrides, *QUIET, f"hydra.run.dir={root / name}"]
            for name, overrides in RUNS.items()
        },
        root,
    )
    checkpoints = {name: root / name / "checkpoints" / "last.ckpt" for name in RUNS}
    _run_all(
        {
            name: ["fastff.eval", f"ckpt_path={ckpt}", f"hydra.run.dir={root / name / 'eval'}"]
            for name, ckpt in checkpoints.items()
        },
        root,
    )
    return {
        name: (ckpt, json.loads((root / name / "eval" / "eval.json").read_text())["test_acc"])
        for name, ckpt in checkpoints.items()
    }


def _equals_fastff(model: torch.nn.Module, run) -> None:
    for batch in (1, 37):
        x = torch.rand(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(run(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", RUNS)
def test_export_cli_writes_an_onnx_file_with_the_eval_accuracy(trained, tmp_path, name):
    ckpt, eval_acc = trained[name]
    output = tmp_path / "model.onnx"
    proc = run_cli(
        "fastff.export",
        f"ckpt_path={ckpt}",
        "format=onnx",
        f"output={output}",
        "test=true",
        f"hydra.run.dir={tmp_path / 'export'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "export" / "export.json").read_text())
    assert written["format"] == "onnx" and written["max_abs_difference"] <= 1e-5
    assert written["input"]["shape"] == ["batch", 1, 8, 8]
    # eval.json rounds to 4 decimals; one of the 360 test images is 0.28 %
    assert written["test_acc"] == pytest.approx(eval_acc, abs=1e-3)
    _equals_fastff(load_model(ckpt), export.load_exported(output, "onnx"))


@pytest.mark.parametrize("name", RUNS)
def test_torch_export_of_a_checkpoint_has_the_eval_accuracy(trained, tmp_path, name):
    ckpt, eval_acc = trained[name]
    model = load_model(ckpt)
    path = export.export_model(model, torch.rand(2, 1, 8, 8), tmp_path / "m.pt2", "torch_export")
    run = export.load_exported(path, "torch_export")
    _equals_fastff(model, run)
    data = instantiate(run_config(read_checkpoint(ckpt))["data"])
    assert export.exported_test_accuracy(run, data) == pytest.approx(eval_acc, abs=1e-3)


def test_export_cli_refuses_a_bad_format_in_one_line(tmp_path):
    proc = run_cli(
        "fastff.export",
        "ckpt_path=nowhere.ckpt",
        "format=tflite",
        f"hydra.run.dir={tmp_path / 'export'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: format must be one of ['onnx', 'torch_export'], got 'tflite'"]
