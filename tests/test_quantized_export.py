"""Quantized models (FFF, FF, MoE) export to ONNX with bf16 / int8 initializers and to
``torch.export``; both files compute what the quantized torch model computes, and the ONNX file
is smaller than the float one by about the storage ratio."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime  # noqa: F401  (export.load_exported runs the file in it)
import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
import pytest
import torch
from torch import nn

from fastff import export, quantize
from fastff.layers import FF, FFF, MoE

STORAGE = {"bf16": onnx.TensorProto.BFLOAT16, "int8": onnx.TensorProto.INT8}


def _layer(kind: str) -> nn.Module:
    torch.manual_seed(0)
    # large enough that the weights, not the graph, make most of the file
    if kind == "fff":
        return FFF(64, 48, 16, 6)
    if kind == "ff":
        return FF(64, 48, 1024)
    moe = MoE(64, 48, 32, 32, k=2)
    with torch.no_grad():
        moe.w_gate.uniform_(-1, 1)
    return moe


def _compact_weights(kind: str) -> tuple[str, ...]:
    return ("1.fc1.weight", "1.fc2.weight") if kind == "ff" else ("1.w1s", "1.w2s")


@pytest.mark.parametrize("format", ["bf16", "int8"])
@pytest.mark.parametrize("kind", ["fff", "ff", "moe"])
def test_quantized_onnx_equals_the_quantized_model(tmp_path: Path, kind, format):
    model = nn.Sequential(nn.Flatten(), _layer(kind)).eval()
    quantized = quantize(model, format)
    example = torch.rand(2, 1, 8, 8)
    float_file = export.export_onnx(model, example, tmp_path / "float.onnx")
    path = export.export_onnx(quantized, example, tmp_path / "compact.onnx")
    types = {i.name: i.data_type for i in onnx.load(path).graph.initializer}
    for name in _compact_weights(kind):
        assert types[name] == STORAGE[format], name
    ratio = path.stat().st_size / float_file.stat().st_size
    assert ratio < (0.65 if format == "bf16" else 0.5)  # float32: 1; graph and biases stay
    x = torch.rand(37, 1, 8, 8)
    with torch.inference_mode():
        expected = quantized(x)
    torch.testing.assert_close(export.load_exported(path, "onnx")(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("format", ["bf16", "int8"])
@pytest.mark.parametrize("kind", ["fff", "ff", "moe"])
def test_quantized_torch_export_equals_the_quantized_model(tmp_path: Path, kind, format):
    quantized = quantize(nn.Sequential(nn.Flatten(), _layer(kind)).eval(), format)
    path = export.export_model(
        quantized, torch.rand(2, 1, 8, 8), tmp_path / "m.pt2", "torch_export"
    )
    x = torch.rand(5, 1, 8, 8)
    with torch.inference_mode():
        expected = quantized(x)
    got = export.load_exported(path, "torch_export")(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
