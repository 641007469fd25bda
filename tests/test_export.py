"""Export of the hard path (fastff.export): the ``gather`` strategy and MoE's gathered forward equal
the fast paths; ONNX Runtime and torch.export outputs equal fastff's hard forward with a dynamic
batch; the exported FFF graph stays log-time (no tensor scales with leaves x batch); the files run
without fastff."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import onnxruntime  # noqa: F401  (export.load_exported runs .onnx files in it)
import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
import pytest
import sympy
import torch
from oracles import fff_hard_oracle
from torch import nn

from fastff import export
from fastff.config_checks import ConfigError
from fastff.layers import FF, FFF, MoE
from fastff.models import layer_builders
from fastff.models.vit import build_vit

ATOL = 1e-5
BATCH_SIZES = (1, 37)


def _fff(depth: int, d: int = 12, o: int = 5, leaf: int = 3, seed: int = 0) -> FFF:
    torch.manual_seed(seed)
    return FFF(d, o, leaf, depth).eval()


def _moe(k: int, experts: int = 6, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(12, 5, experts, 3, k=k).eval()
    with torch.no_grad():  # a trained-looking router (the zero init ties every expert)
        moe.w_gate.normal_()
    return moe


LAYERS = {
    "ff": lambda: FF(12, 5, 24).eval(),
    "fff_depth0": functools.partial(_fff, 0),
    "fff_depth1": functools.partial(_fff, 1),
    "fff_depth5": functools.partial(_fff, 5),
    "moe_k1": functools.partial(_moe, 1),
    "moe_k2": functools.partial(_moe, 2),
}


def _hard(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """fastff's hard forward: the eval-mode forward on its default (fast) path."""
    with torch.no_grad():
        return layer(x)


# ------------------------------------------------------------------------- the entry point
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["format=tflite"], "format must be one of ['onnx', 'torch_export'], got 'tflite'"),
        (["format=torch_export", "output=m.onnx"], "output=m.onnx must end in .pt2"),
        (["format=onnx"], "ckpt_path: no checkpoint file at 'nowhere.ckpt'"),
    ],
)
def test_export_refuses_bad_settings_before_any_work(make_cfg, overrides, expected):
    cfg = make_cfg("ckpt_path=nowhere.ckpt", *overrides, name="export")
    with pytest.raises(ConfigError) as error:
        export.export_checkpoint(cfg)
    assert str(error.value).startswith(expected)


# ------------------------------------------------------------------ the export paths themselves
@pytest.mark.parametrize("depth", [0, 1, 3, 6])
@pytest.mark.parametrize("shape", [(1,), (37,), (4, 9)])
def test_gather_strategy_equals_the_oracle_and_the_fast_paths(depth, shape):
    layer = _fff(depth).double()
    x = torch.randn(*shape, 12, dtype=torch.float64)
    gathered = layer.hard_forward(x, "gather")
    torch.testing.assert_close(gathered, fff_hard_oracle(layer, x))
    for strategy in ("plain", "grouped", "auto"):
        torch.testing.assert_close(gathered, layer.hard_forward(x, strategy))


def test_gather_strategy_has_gradients_and_respects_frozen_tree():
    torch.manual_seed(0)
    layer = FFF(6, 2, 2, 3, frozen_tree=True).double()
    x = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    layer.hard_forward(x, "gather").sum().backward()
    reference = x.grad.clone()
    x.grad = None
    layer.hard_forward(x, "plain").sum().backward()
    torch.testing.assert_close(reference, x.grad)
    assert layer.node_weights.grad is None and layer.w1s.grad is not None


@pytest.mark.parametrize("k,experts", [(1, 6), (2, 6), (6, 6)])
@pytest.mark.parametrize("shape", [(1,), (37,), (3, 7)])
def test_moe_gathered_forward_equals_the_dispatch(k, experts, shape):
    moe = _moe(k, experts).double()
    x = torch.randn(*shape, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(moe.gathered_forward(x), moe(x))


def test_export_paths_restores_the_layers_settings():
    model = nn.Sequential(_fff(2), nn.ReLU(), _moe(1, 6)).eval()
    model[0].hard_strategy = "grouped"
    with export.export_paths(model):
        assert model[0].hard_strategy == "gather" and model[0].eval_path == "hard"
        assert model[2].forward == model[2].gathered_forward
    assert model[0].hard_strategy == "grouped" and model[0].eval_path == "hard"
    assert "forward" not in model[2].__dict__
    with pytest.raises(ValueError, match="eval mode"), export.export_paths(model.train()):
        pass


# ---------------------------------------------------------- exported files equal fastff's forward
@pytest.fixture(scope="module")
def exported_layers(tmp_path_factory) -> dict[str, tuple[nn.Module, dict[str, Path]]]:
    """Every layer of LAYERS exported once in both formats."""
    root = tmp_path_factory.mktemp("export_layers")
    exported = {}
    for name, make in LAYERS.items():
        layer = make()
        example = torch.randn(2, 12)
        exported[name] = (
            layer,
            {
                fmt: export.export_model(layer, example, root / f"{name}{suffix}", fmt)
                for fmt, suffix in export.SUFFIXES.items()
            },
        )
    return exported


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("name", LAYERS)
def test_exported_layer_equals_the_hard_forward(exported_layers, name, fmt):
    layer, paths = exported_layers[name]
    run = export.load_exported(paths[fmt], fmt)
    for batch in BATCH_SIZES:
        x = torch.randn(batch, 12)
        got = run(x)
        assert got.shape == (batch, 5) and got.dtype == torch.float32
        torch.testing.assert_close(got, _hard(layer, x), atol=ATOL, rtol=0)


def test_onnx_graph_has_named_dynamic_batch(exported_layers):
    session = export.onnx_session(exported_layers["fff_depth5"][1]["onnx"])
    (images,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (images.name, images.shape, images.type) == ("images", ["batch", 12], "tensor(float)")
    assert (logits.name, logits.shape) == ("logits", ["batch", 5])


def test_the_export_path_traces_a_wide_layer_with_dynamic_batch():
    """``plain``'s chunked gather fails to export at 768 -> 768, leaf 32; ``gather`` does not."""
    torch.manual_seed(0)
    layer = FFF(768, 768, 32, 3).eval()
    program = export.export_program(layer, torch.randn(2, 768)).module()
    for batch in BATCH_SIZES:
        x = torch.randn(batch, 768)
        torch.testing.assert_close(program(x), _hard(layer, x), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ log time
def _per_input_sizes_torch(program: torch.export.ExportedProgram) -> list[int]:
    """Elements per input of every tensor in the exported graph whose size grows with the batch
    (d numel / d batch); tensors of fixed size (the weights) are left out."""
    sizes = []
    for node in program.graph.nodes:
        values = node.meta.get("val")
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if not isinstance(value, torch.Tensor) or isinstance(value.numel(), int):
                continue
            expr = value.numel().node.expr
            (batch,) = expr.free_symbols
            sizes.append(int(sympy.diff(expr, batch)))
    return sizes


def _per_input_sizes_onnx(path: Path) -> list[int]:
    """The same for every value of the ONNX graph (after ONNX shape inference)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    batch = sympy.Symbol(export.BATCH_DIM)
    sizes = []
    for value in [*model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if any(not (d.HasField("dim_value") or d.HasField("dim_param")) for d in dims):
            continue
        factors = [
            d.dim_value if d.HasField("dim_value") else sympy.sympify(d.dim_param) for d in dims
        ]
        if any(isinstance(f, sympy.Basic) and f.free_symbols - {batch} for f in factors):
            # a dimension of unknown size: only 1-d index or shape vectors have one here
            assert len(dims) == 1, value.name
            sizes.append(1)
            continue
        numel = sympy.Mul(*factors)
        if numel.free_symbols:
            sizes.append(int(sympy.diff(numel, batch)))
    return sizes


class _Soft(nn.Module):
    """The soft mixture (every leaf), as a control the inspection must catch."""

    def __init__(self, layer: FFF) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.soft_forward(x)


def test_exported_fff_graph_is_log_time(tmp_path):
    """At depths 6 and 10 (64 and 1024 leaves) no tensor of the exported graph, torch.export's or
    ONNX's, holds more than D * leaf_width elements per input: the reached node's row (D), the
    reached leaf's weights (D * l, l * O), never one entry per leaf. The soft mixture, exported
    the same way, is caught holding one per leaf and input."""
    d, o, leaf = 8, 3, 2
    largest = {}
    for depth in (6, 10):
        layer = _fff(depth, d, o, leaf)
        example = torch.randn(2, d)
        torch_sizes = _per_input_sizes_torch(export.export_program(layer, example))
        onnx_sizes = _per_input_sizes_onnx(
            export.export_onnx(layer, example, tmp_path / f"d{depth}.onnx")
        )
        assert torch_sizes and onnx_sizes
        largest[depth] = (max(torch_sizes), max(onnx_sizes))
        assert max(*torch_sizes, *onnx_sizes) <= d * leaf < layer.n_leaves

        soft = torch.export.export(_Soft(layer).eval(), (example,))
        assert max(_per_input_sizes_torch_static(soft, example.shape[0])) >= layer.n_leaves
    assert largest[6] == largest[10] == (d * leaf, d * leaf)


def _per_input_sizes_torch_static(program: torch.export.ExportedProgram, batch: int) -> list[int]:
    """Elements per input of the tensors with a leading batch dimension (static export)."""
    sizes = []
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:
            sizes.append(value.numel() // batch)
    return sizes


# --------------------------------------------------------------------- runs without fastff
NO_FASTFF = textwrap.dedent(
    """
    import sys
    sys.modules["fastff"] = None  # any import of fastff now fails
    import onnxruntime, torch
    folder = sys.argv[1]
    x = torch.load(folder + "/x.pt")
    for name in ("vit_fff", "vit_moe"):
        program = torch.export.load(f"{folder}/{name}.pt2").module()
        session = onnxruntime.InferenceSession(f"{folder}/{name}.onnx")
        torch.save(
            {
                "torch_export": program(x),
                "onnx": torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]),
            },
            f"{folder}/{name}_out.pt",
        )
    """
)


def _vit(layer_factory) -> nn.Module:
    torch.manual_seed(0)
    model = build_vit((1, 8, 8), 10, layer_factory, embed_dim=32, depth=2, num_heads=2).eval()
    for module in model.modules():
        if isinstance(module, MoE):
            with torch.no_grad():
                module.w_gate.normal_()
    return model


@pytest.mark.slow
def test_exported_vits_run_without_fastff(tmp_path):
    """A ViT whose MLPs are FFFs and one whose MLPs are MoEs, exported in both formats, run in a
    process where fastff cannot be imported, equal to fastff's hard forward at batch 37."""
    models = {
        "vit_fff": _vit(functools.partial(layer_builders.fff, leaf_width=4)),
        "vit_moe": _vit(functools.partial(layer_builders.moe, expert_width=8, k=2)),
    }
    example = torch.rand(2, 1, 8, 8)
    for name, model in models.items():
        for fmt, suffix in export.SUFFIXES.items():
            export.export_model(model, example, tmp_path / f"{name}{suffix}", fmt)
    x = torch.rand(37, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run(
        [sys.executable, "-c", NO_FASTFF, str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, model in models.items():
        outputs = torch.load(tmp_path / f"{name}_out.pt")
        for fmt in export.FORMATS:
            torch.testing.assert_close(outputs[fmt], _hard(model, x), atol=ATOL, rtol=0)


# ------------------------------------------------------------------- the bench's onnx column
def test_bench_table1_has_the_onnx_columns(tmp_path):
    """FF and FFF exported and run in ONNX Runtime beside the PyTorch columns, checked first."""
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from fastff.bench import runner
    from fastff.hydra_app import config_dir

    overrides = [
        "mode=table1",
        "modes.table1.in_features=20",
        "modes.table1.widths=[8]",
        "modes.table1.leaf_widths=[2]",
        "modes.table1.batch_sizes=[16]",
        "implementations=[ff,fff,ff_onnx,fff_onnx]",
        "timing.min_run_time=0.01",
        "timing.repeats=1",
        "timing.warmup=1",
        "wandb.mode=disabled",
        "device=cpu",
        f"paths.output_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("bench", overrides=overrides)
    runner.run(cfg, tmp_path)
    row = pd.read_csv(tmp_path / "bench_table1.csv").iloc[0]
    for column in ("t_FF_onnx_ms", "t_FFF_onnx_ms", "FF/FFF onnx"):
        assert row[column] > 0, column
    assert row["FF/FFF onnx"] == pytest.approx(row["t_FF_onnx_ms"] / row["t_FFF_onnx_ms"])
    assert not isinstance(row["notes"], str) or "onnx" not in row["notes"]
