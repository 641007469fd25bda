"""``format=onnx`` writes one self-contained file (the weights inline), so ``model.onnx`` copied
alone runs in ONNX Runtime; only weights over ONNX's 2 GB limit go to ``model.onnx.data``."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnxruntime as ort
import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; a missing one fails here)
import torch

from fastff import export
from fastff.layers import FFF


def _layer() -> FFF:
    torch.manual_seed(0)
    return FFF(12, 5, 4, 3).eval()


def _run_copied(files: list[Path], where: Path, x: torch.Tensor) -> torch.Tensor:
    """Copy ``files`` (and nothing else) to ``where`` and run the .onnx there."""
    where.mkdir()
    for f in files:
        shutil.copy(f, where / f.name)
    session = ort.InferenceSession(str(where / files[0].name), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def test_onnx_export_is_one_file_that_runs_copied_alone(tmp_path: Path):
    layer = _layer()
    path = export.export_onnx(layer, torch.randn(2, 12), tmp_path / "out" / "model.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    x = torch.randn(9, 12)
    with torch.no_grad():
        expected = layer(x)
    torch.testing.assert_close(
        _run_copied([path], tmp_path / "copy", x), expected, atol=1e-5, rtol=0
    )


def test_a_stale_data_file_of_an_earlier_export_is_removed(tmp_path: Path):
    stale = export.external_data_path(tmp_path / "model.onnx")
    stale.write_bytes(b"old weights")
    export.export_onnx(_layer(), torch.randn(2, 12), tmp_path / "model.onnx")
    assert not stale.exists()


def test_weights_over_the_limit_are_written_as_the_pair(tmp_path: Path, monkeypatch):
    # The exporter moves weights out of the file above its size threshold (1.5 GB, below ONNX's
    # 2 GB limit); lowered here so a small layer takes that path.
    from torch.onnx._internal.exporter import _onnx_program

    monkeypatch.setattr(_onnx_program, "_LARGE_MODEL_THRESHOLD", 16)
    layer = _layer()
    path = export.export_onnx(layer, torch.randn(2, 12), tmp_path / "out" / "model.onnx")
    data = export.external_data_path(path)
    assert data.is_file() and data.name == "model.onnx.data"
    x = torch.randn(3, 12)
    with torch.no_grad():
        expected = layer(x)
    torch.testing.assert_close(
        _run_copied([path, data], tmp_path / "copy", x), expected, atol=1e-5, rtol=0
    )
