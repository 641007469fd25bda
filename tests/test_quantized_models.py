"""``fastff.quantize`` on a flat FFF net trained on digits for this module: quantized predictions
agree with float32 on at least 99 % of the test images and G_A moves by at most 0.5 points;
``fastff.eval`` and ``fastff.export`` take ``quantize=``; a quantized checkpoint (int8/bf16
tensors and scales) loads back through fastff's loader with ``weights_only=True``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime  # noqa: F401  (the export CLI checks its file in ONNX Runtime)
import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
import pytest
import torch
from pipeline_utils import run_cli

from fastff import export, quantize
from fastff.data.digits import DigitsDataModule
from fastff.layers import FFF
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.quantization import save_quantized_checkpoint
from fastff.training.checkpoint import load_model, read_checkpoint

pytestmark = pytest.mark.slow

FORMATS = ("bf16", "int8")
STORAGE = {"bf16": torch.bfloat16, "int8": torch.int8}
QUIET = ("callbacks.rich_progress_bar=null", "logger=none")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of the default flat FFF net trained briefly on digits through the CLI."""
    root = tmp_path_factory.mktemp("quantized_run")
    proc = run_cli(
        "fastff.train", "trainer.max_epochs=4", *QUIET, f"hydra.run.dir={root}", cwd=root,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits test images (360, 1, 8, 8) and labels."""
    data = DigitsDataModule()
    data.setup("test")
    images, labels = zip(*data.test_dataloader(), strict=True)
    return torch.cat(images), torch.cat(labels)


def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(images).argmax(-1)


@pytest.mark.parametrize("format", FORMATS)
def test_quantized_predictions_agree_and_accuracy_holds(trained, test_split, format):
    images, labels = test_split
    model = load_model(trained)
    assert isinstance(model.layer, FFF)
    quantized = quantize(model, format)
    assert isinstance(quantized.layer, QuantizedFFF) and quantized.layer.format == format
    float_pred, quantized_pred = _predict(model, images), _predict(quantized, images)
    agreement = (float_pred == quantized_pred).float().mean().item()
    float_acc = 100 * (float_pred == labels).float().mean().item()
    quantized_acc = 100 * (quantized_pred == labels).float().mean().item()
    assert float_acc > 50  # the model did learn something: the comparison means something
    assert agreement >= 0.99
    assert abs(quantized_acc - float_acc) <= 0.5


@pytest.mark.parametrize("format", FORMATS)
def test_quantized_checkpoint_round_trip_with_weights_only(trained, tmp_path, format):
    path = save_quantized_checkpoint(trained, tmp_path / f"{format}.ckpt", format)
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    state = raw["state_dict"]
    assert state["model.layer.w1s"].dtype == STORAGE[format]
    assert state["model.layer.w2s"].dtype == STORAGE[format]
    assert ("model.layer.w1s_scale" in state) == (format == "int8")
    if format == "int8":
        assert state["model.layer.w1s_scale"].dtype == torch.float32
    assert raw["hyper_parameters"]["config"]["quantize"] == format
    loaded = load_model(path)  # through read_checkpoint: weights_only and the allow-list
    expected = quantize(load_model(trained), format)
    assert isinstance(loaded.layer, QuantizedFFF)
    x = torch.rand(23, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(loaded(x), expected(x))
    # smaller on disk than the float checkpoint's weights
    assert path.stat().st_size < Path(trained).stat().st_size


def test_a_quantized_checkpoint_with_float_weights_is_refused(trained, tmp_path):
    path = save_quantized_checkpoint(trained, tmp_path / "int8.ckpt", "int8")
    ckpt = read_checkpoint(path)
    ckpt["state_dict"]["model.layer.w2s"] = ckpt["state_dict"]["model.layer.w2s"].float()
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"model\.layer\.w2s is torch\.float32.*torch\.int8"):
        load_model(tmp_path / "bad.ckpt")


def test_eval_cli_with_quantize(trained, test_split, tmp_path):
    images, labels = test_split
    float_acc = 100 * (_predict(load_model(trained), images) == labels).float().mean().item()
    proc = run_cli(
        "fastff.eval", f"ckpt_path={trained}", "quantize=int8", f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["quantize"] == "int8" and written["test_acc_soft"] is None
    assert abs(written["test_acc"] - float_acc) <= 0.5


@pytest.mark.parametrize("command", ["fastff.eval", "fastff.export"])
def test_unknown_quantize_is_one_line(trained, tmp_path, command):
    proc = run_cli(
        command, f"ckpt_path={trained}", "quantize=fp8", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "quantize must be null, bf16 or int8, got 'fp8'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("format", FORMATS)
def test_export_cli_with_quantize_runs_in_onnx_runtime(trained, tmp_path, format):
    output = tmp_path / "model.onnx"
    proc = run_cli(
        "fastff.export", f"ckpt_path={trained}", "format=onnx", f"output={output}",
        f"quantize={format}", f"hydra.run.dir={tmp_path / 'export'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "export" / "export.json").read_text())
    assert written["quantize"] == format and written["max_abs_difference"] <= 1e-5
    types = {i.name: i.data_type for i in onnx.load(output).graph.initializer}
    wanted = onnx.TensorProto.BFLOAT16 if format == "bf16" else onnx.TensorProto.INT8
    assert types["layer.w1s"] == wanted and types["layer.w2s"] == wanted
    run = export.load_exported(output, "onnx")
    quantized = quantize(load_model(trained), format)
    x = torch.rand(37, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(run(x), quantized(x), atol=1e-5, rtol=0)
