"""The benchmark's ONNX Runtime columns: FF and FFF exported with :mod:`fastff.export` and run in
ONNX Runtime (CPU, float32), the speedup a deployment would see (``FF/FFF onnx``).

Each :class:`OnnxLayer` is checked when built: the file's outputs must equal the layer's hard
forward on a random batch, else every timed call raises and the table shows the error instead of
a time (so no speedup is reported for a wrong export).
"""

from __future__ import annotations

import tempfile
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

from fastff.bench.checks import OUTPUT_TOLERANCE

CHECK_BATCH = 37


def unavailable_reason() -> str | None:
    """Why ONNX export or ONNX Runtime cannot run here, or None."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if find_spec(name) is None]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed (pip install {' '.join(missing)})"


class OnnxLayer(nn.Module):
    """``layer`` (eval mode, every FFF on its hard path) exported to ONNX and run in ONNX
    Runtime; (B, D) float32 CPU tensors in, (B, O) out. The session is created on the first call
    with the torch thread count of that moment (the benchmark's ``threads`` while timing)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        from fastff import export

        self._export = export
        self.problem = unavailable_reason()
        self._session = None
        self._folder = tempfile.TemporaryDirectory(prefix="fastff-bench-onnx-")
        self.path = Path(self._folder.name) / "layer.onnx"
        if self.problem is None:
            try:
                self._export_and_check(layer.eval())
            except Exception as error:  # e.g. a model past ONNX's 2 GB file limit: a table note
                last_line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                self.problem = f"ONNX export failed: {last_line[:200]}"

    def _export_and_check(self, layer: nn.Module) -> None:
        in_features = layer.in_features
        self._export.export_onnx(layer, torch.randn(2, in_features), self.path)
        x = torch.randn(CHECK_BATCH, in_features)
        with torch.no_grad():
            expected = layer(x)
        got = self._export.load_exported(self.path, "onnx")(x)
        worst = (got - expected).abs().max().item()
        tolerance = OUTPUT_TOLERANCE[torch.float32] * (expected.abs().max().item() + 1.0)
        if not worst <= tolerance:
            self.problem = f"the ONNX export differs from the layer by {worst:.3g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.problem is not None:
            raise RuntimeError(self.problem)
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise RuntimeError("the ONNX Runtime columns run on the CPU in float32 only")
        if self._session is None:
            self._session = self._export.onnx_session(self.path, torch.get_num_threads())
        feed = {self._export.INPUT_NAME: x.numpy()}
        return torch.from_numpy(self._session.run([self._export.OUTPUT_NAME], feed)[0])
