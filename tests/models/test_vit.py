"""model=vit: timm's VisionTransformer with FF, FFF or MoE MLPs, built from the layer configs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from oracles import fff_hard_oracle
from pipeline_utils import run_cli
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.models import layer_builders
from fastff.models.sizes import model_sizes
from fastff.models.timm_mlp import TimmMlp
from fastff.models.vit import PAPER_VIT, build_vit
from fastff.train import train
from fastff.training.checkpoint import load_model
from fastff.training.layer_stats import level_entropies, total_aux_loss

LAYERS = {
    "ff": functools.partial(layer_builders.ff, width=None),
    "fff": functools.partial(layer_builders.fff, width=None, leaf_width=8, hardening=3.0),
    "moe": functools.partial(layer_builders.moe, width=None, expert_width=32, k=2),
}
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
QUICK = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_forward_and_backward_on_images_of_any_shape(layer, shape):
    vit = build_vit(shape, 10, LAYERS[layer])
    x = torch.rand(3, *shape)
    vit.train()
    loss = F.cross_entropy(vit(x), torch.tensor([0, 1, 2])) + total_aux_loss(vit, x)
    loss.backward()
    hosted = [m for m in vit.modules() if isinstance(m, (FF, FFF, MoE))]
    assert len(hosted) == PAPER_VIT["depth"]
    assert all(m.training_width == 128 for m in hosted)
    for m in hosted:
        trainable = [p for p in m.parameters() if p.requires_grad]
        if isinstance(m, MoE):  # the noise weights only get a gradient through the load loss
            trainable = [m.w1s, m.w2s]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert vit.eval()(x).shape == (3, 10)


def test_fff_depth_follows_the_vits_hidden_width():
    vit = build_vit((1, 8, 8), 10, LAYERS["fff"])
    fff = vit.blocks[0].mlp
    assert isinstance(fff, FFF) and (fff.leaf_width, fff.depth) == (8, 4)
    moe = build_vit((1, 8, 8), 10, LAYERS["moe"]).blocks[0].mlp
    assert (moe.num_experts, moe.expert_width, moe.k) == (4, 32, 2)


def test_ff_in_vit_has_the_parameter_count_of_timms_own_vit():
    ours = build_vit((3, 32, 32), 10, LAYERS["ff"])
    timms = VisionTransformer(
        img_size=32, in_chans=3, num_classes=10, **PAPER_VIT, pos_drop_rate=0.1
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(timms)
    assert [type(b.mlp).__name__ for b in timms.blocks] == ["Mlp"] * 4


@pytest.mark.parametrize("layer", ["fff", "moe"])
def test_timms_init_leaves_fff_and_moe_parameters_as_the_layer_made_them(layer, monkeypatch):
    """Record the RNG state as each block's layer is built; rebuilding the layer from that state
    alone must give exactly the parameters the finished ViT holds."""
    states: list[torch.Tensor] = []
    build = TimmMlp.__call__

    def recording(self, *args, **kwargs):
        states.append(torch.get_rng_state())
        return build(self, *args, **kwargs)

    monkeypatch.setattr(TimmMlp, "__call__", recording)
    vit = build_vit((1, 8, 8), 10, LAYERS[layer])
    monkeypatch.setattr(TimmMlp, "__call__", build)
    assert len(states) == 4
    for block, state in zip(vit.blocks, states, strict=True):
        mlp = block.mlp
        torch.set_rng_state(state)
        if layer == "fff":
            fresh = FFF(128, 128, leaf_width=8, depth=4, hardening=3.0)
        else:
            fresh = MoE(128, 128, num_experts=4, expert_width=32, k=2)
            assert torch.count_nonzero(mlp.w_gate) == 0  # still zero-initialised
        for (name, ours), (_, theirs) in zip(
            mlp.named_parameters(), fresh.named_parameters(), strict=True
        ):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)


def test_fix_init_works_for_ff_and_is_refused_for_fff_and_moe():
    vit = build_vit((1, 8, 8), 10, LAYERS["ff"], fix_init=True)
    assert isinstance(vit.blocks[0].mlp, FF)
    for layer in ("fff", "moe"):
        with pytest.raises(
            ValueError, match=r"model\.fix_init=true rescales each block's mlp\.fc2"
        ):
            build_vit((1, 8, 8), 10, LAYERS[layer], fix_init=True)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_eval_runs_every_blocks_fff_hard(shape):
    vit = build_vit(shape, 10, LAYERS["fff"]).double().eval()
    x = torch.rand(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        ours = vit(x)
        for block in vit.blocks:
            block.mlp = _Oracle(block.mlp)
        oracle = vit(x)
    torch.testing.assert_close(ours, oracle, rtol=1e-9, atol=1e-9)


class _Oracle(nn.Module):
    """A block's FFF replaced by the per-token tree walk of tests/layers/oracles.py."""

    def __init__(self, fff: FFF) -> None:
        super().__init__()
        self.fff = fff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fff_hard_oracle(self.fff, x)


def test_hardening_adds_to_the_training_loss():
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    losses = []
    for hardening in (0.0, 3.0):
        torch.manual_seed(0)
        layer = functools.partial(layer_builders.fff, width=None, leaf_width=8, hardening=hardening)
        vit = build_vit((1, 8, 8), 10, layer).train()
        torch.manual_seed(1)  # the same dropout draws
        logits = vit(x)
        losses.append(F.cross_entropy(logits, y) + total_aux_loss(vit, logits))
    assert losses[1] > losses[0] + 1.0  # 4 blocks, each h * mean entropy (about ln 2)


def test_entropies_are_named_per_hosted_layer_and_level():
    vit = build_vit((1, 8, 8), 10, LAYERS["fff"]).train()
    vit(torch.rand(2, 1, 8, 8))
    keys = set(level_entropies(vit))
    assert keys == {f"entropy/blocks.{b}.mlp/level_{m}" for b in range(4) for m in range(4)}


def test_a_timm_architecture_by_name_gets_the_same_swap():
    layer = functools.partial(layer_builders.fff, width=None, leaf_width=24)
    vit = build_vit((1, 8, 8), 10, layer, arch="vit_tiny_patch16_224", patch_size=4)
    assert len(vit.blocks) == 12 and vit.embed_dim == 192
    fff = vit.blocks[0].mlp
    assert isinstance(fff, FFF) and fff.training_width == 768 and fff.depth == 5
    assert vit(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_model_sizes_of_a_vit():
    sizes = model_sizes(build_vit((1, 8, 8), 10, LAYERS["fff"]))
    assert sizes["n_hosted_layers"] == 4 and sizes["layer"] == "fff"
    assert (sizes["training_width"], sizes["leaf_width"], sizes["depth"]) == (128, 8, 4)
    assert (sizes["inference_width"], sizes["inference_size"]) == (8, 12)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("layer.width=256",),
            "error: layer.width=256 disagrees with the ViT's MLP hidden width 128 "
            "(model.embed_dim * model.mlp_ratio)",
        ),
        (
            ("layer.leaf_width=48",),
            "error: layer.leaf_width=48 must divide the ViT's MLP hidden width 128",
        ),
        (("model.num_heads=3",), "error: model: timm cannot build this ViT"),
    ],
)
def test_sizes_that_disagree_with_the_vit_are_one_line(tmp_path: Path, overrides, expected):
    proc = run_cli(
        "fastff.train", "model=vit", *overrides, f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_vit_checkpoint_round_trip(make_cfg):
    cfg = make_cfg(
        "model=vit",
        "layer.leaf_width=8",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        *QUICK,
    )
    results = train(cfg)
    assert results["status"] == "finished" and results["n_hosted_layers"] == 4
    assert results["model"] == "vit" and results["depth"] == 4
    model = load_model(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"))
    assert isinstance(model, VisionTransformer) and not model.training
    checkpoint = torch.load(
        Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=False
    )
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items()}
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    entropy_keys = [k for k in results["history"][0] if k.startswith("entropy/")]
    assert "entropy/blocks.3.mlp/level_3" in entropy_keys


@pytest.mark.slow
def test_table3_fast_dev_run_through_the_cli_on_cifar_format_files(tmp_path: Path):
    from fake_datasets import write_fake_dataset

    write_fake_dataset("cifar10", tmp_path / "data")
    proc = run_cli(
        "fastff.train",
        "experiment=table3",
        "layer.leaf_width=32",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.download=false",
        "data.check_integrity=false",
        "trainer.fast_dev_run=true",
        "trainer=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar10" and metrics["model"] == "vit"
    assert (metrics["depth"], metrics["leaf_width"], metrics["n_hosted_layers"]) == (2, 32, 4)
    assert metrics["config"]["layer"]["hardening"] == 5.0
    assert metrics["config"]["data"]["augment"] is True


@pytest.mark.slow
def test_offline_table3_fast_dev_run(make_cfg):
    results = train(
        make_cfg("experiment=table3_mnist5k", "layer=ff", "trainer.fast_dev_run=true", *QUICK)
    )
    assert results["status"] == "smoke_test" and results["dataset"] == "mnist5k"
    assert results["layer"] == "ff" and results["training_width"] == 128
