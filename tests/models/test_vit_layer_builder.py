"""The ViT builds its MLPs through the layer config's builder, as the flat net builds its layer:
the same unknown-key error, the same memory check, the same size rule."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from pipeline_utils import run_cli

from fastff.errors import LayerConfigError
from fastff.layers import FFF
from fastff.models import layer_builders
from fastff.models.flat import FlatNet
from fastff.models.vit import build_vit


def _fff(**keywords):
    return functools.partial(layer_builders.fff, leaf_width=8, **keywords)


def test_an_unknown_layer_key_is_the_flat_nets_error():
    with pytest.raises(LayerConfigError) as flat:
        FlatNet((1, 8, 8), 10, _fff(width=128, hardenin=3.0))
    with pytest.raises(LayerConfigError) as vit:
        build_vit((1, 8, 8), 10, _fff(width=None, hardenin=3.0))
    assert str(vit.value) == str(flat.value)
    assert str(vit.value).startswith("layer.hardenin: unknown setting for layer=fff")
    assert "did you mean hardening?" in str(vit.value)


def test_a_layer_too_large_for_the_memory_limit_is_refused(monkeypatch):
    # the ViT's MLP: 128 -> 128 at leaf width 8 and depth 4, in float32
    layer = FFF(128, 128, 8, 4)
    needed = sum(p.numel() * p.element_size() for p in layer.parameters())
    monkeypatch.setenv("FASTFF_MAX_LAYER_GB", str(0.9 * needed / 2**30))
    with pytest.raises(LayerConfigError, match=r"the layer \(FFF, 128 -> 128\) needs"):
        build_vit((1, 8, 8), 10, _fff(width=None))
    with pytest.raises(LayerConfigError, match=r"the layer \(FFF, 64 -> 10\) needs"):
        FlatNet((1, 8, 8), 10, _fff(width=8 * 2**12))  # far above the cap: the flat net too
    monkeypatch.setenv("FASTFF_MAX_LAYER_GB", str(1.1 * needed / 2**30))
    vit = build_vit((1, 8, 8), 10, _fff(width=None))
    assert vit.blocks[0].mlp.depth == 4  # the size rule: log2(128 / 8)


@pytest.mark.parametrize(
    ("overrides", "env", "expected"),
    [
        (
            ("+layer.hardenin=1.0",),
            {},
            "error: layer.hardenin: unknown setting for layer=fff; did you mean hardening?",
        ),
        (
            ("layer.leaf_width=8",),
            {"FASTFF_MAX_LAYER_GB": "1e-5"},
            "error: layer.width=128: the layer (FFF, 128 -> 128) needs",
        ),
    ],
)
def test_both_errors_through_the_vit_cli_are_one_line(
    tmp_path: Path, monkeypatch, overrides, env, expected
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    proc = run_cli(
        "fastff.train", "model=vit", *overrides, f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
