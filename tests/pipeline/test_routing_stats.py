"""Routing statistics (leaves reached, top leaf share, dead units) against a per-row oracle, and
their place in metrics.json's per-epoch history after a real training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastff.layers import FFF
from fastff.train import train
from fastff.training.routing_stats import _LeafUsage

QUICK = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu")


def _oracle(layer: FFF, x: torch.Tensor) -> dict[str, float]:
    """Walk the tree row by row in float64 and test every unit of the reached leaf by hand."""
    nw, nb = layer.node_weights.detach().double(), layer.node_biases.detach().double().reshape(-1)
    w1, b1 = layer.w1s.detach().double(), layer.b1s.detach().double()
    counts = [0] * 2**layer.depth
    fired = [[False] * layer.leaf_width for _ in counts]
    for row in x.double():
        node = 0
        for _ in range(layer.depth):
            node = 2 * node + (2 if float(row @ nw[node] + nb[node]) >= 0 else 1)
        leaf = node - (2**layer.depth - 1)
        counts[leaf] += 1
        for unit in range(layer.leaf_width):
            if float(row @ w1[leaf, :, unit] + b1[leaf, unit]) > 0:
                fired[leaf][unit] = True
    reached = [i for i, c in enumerate(counts) if c]
    dead = sum(not f for i in reached for f in fired[i])
    return {
        "leaves_reached": len(reached) / len(counts),
        "top_leaf_share": max(counts) / len(x),
        "dead_units": dead / (len(reached) * layer.leaf_width),
    }


@pytest.mark.parametrize(("depth", "leaf_width"), [(0, 3), (2, 1), (3, 4), (5, 2)])
def test_leaf_usage_matches_a_per_row_oracle(depth, leaf_width):
    torch.manual_seed(depth)
    layer = FFF(6, 3, leaf_width=leaf_width, depth=depth)
    with torch.no_grad():  # some units that never fire, so dead_units is not trivially 0
        layer.b1s[:, 0] = -100.0
    x = torch.randn(37, 6)
    usage = _LeafUsage(layer)
    usage.record(x[:20])
    usage.record(x[20:].reshape(17, 1, 6))  # leading dims, as inside a transformer
    usage.record(x[:0])  # an empty batch changes nothing
    got, want = usage.summary(), _oracle(layer, x)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert want["dead_units"] >= 1 / leaf_width  # unit 0 of every reached leaf is dead


def test_no_inputs_give_no_statistics():
    assert _LeafUsage(FFF(4, 2, leaf_width=2, depth=2)).summary() == {}


def test_history_records_routing_and_soft_accuracies(make_cfg):
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "callbacks.routing_stats.soft_train_accuracy=true",
        *QUICK,
    )
    results = train(cfg)
    history = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())["history"]
    assert len(history) == 2 and history == results["history"]
    for epoch in history:
        for key in ("leaves_reached", "top_leaf_share", "dead_units"):
            assert 0.0 <= epoch[f"routing/layer/{key}"] <= 1.0
        assert epoch["routing/layer/leaves_reached"] >= 1 / 4  # depth 2: at least 1 of 4 leaves
        assert 0.0 <= epoch["train_acc_soft"] <= 1.0 and 0.0 <= epoch["val_acc_soft"] <= 1.0


def test_models_without_fff_record_no_routing(make_cfg):
    results = train(make_cfg("layer=ff", "trainer.max_epochs=1", *QUICK))
    assert not any(key.startswith("routing/") for key in results["history"][0])
    assert "train_acc_soft" not in results["history"][0]  # off by default
