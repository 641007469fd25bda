"""A fourth layer kind from outside src/ (tests/kinds/lowrank_kind, a low-rank FF), registered
through the entry-point group ``fastff.layer_kinds`` of a distribution installed for the test:
trained flat and inside the ViT through the real CLI, its sizes read, timed as a bench case,
exported, its checkpoint loaded, and its runs in the report; nothing under src/ names it."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from pipeline_utils import run_cli

from fastff.models import kinds
from fastff.models.sizes import model_sizes
from fastff.registry import ForeignTargetError
from fastff.training.checkpoint import load_model

KINDS = Path(__file__).parent / "kinds"
SEARCHPATH = f"hydra.searchpath=[file://{KINDS / 'conf'}]"
QUICK = ("trainer=cpu", "logger=none", "callbacks.rich_progress_bar=null", "trainer.max_epochs=1")


def _install(site: Path) -> None:
    """A distribution on ``site`` whose entry point registers the kind (as pip would)."""
    info = site / "lowrank_kind-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lowrank-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fastff.layer_kinds]\nlowrank = lowrank_kind:LOWRANK\n")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    _install(site)
    paths = [str(site), str(KINDS)]
    for path in paths:
        monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    kinds.registered.cache_clear()
    yield site
    kinds.registered.cache_clear()


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_a_registered_kind_goes_through_every_command(plugin: Path, tmp_path: Path, monkeypatch):
    from lowrank_kind import LowRankFF

    assert kinds.get("lowrank").layer_class is LowRankFF
    runs = tmp_path / "runs"
    common = ("data=digits", "layer=lowrank", SEARCHPATH, *QUICK)
    flat = run_cli("fastff.train", *common, f"hydra.run.dir={runs / 'flat'}", cwd=tmp_path)
    assert flat.returncode == 0, flat.stderr[-3000:]
    vit = run_cli(
        "fastff.train",
        *common,
        "model=vit",
        "+trainer.limit_train_batches=2",
        f"hydra.run.dir={runs / 'vit'}",
        cwd=tmp_path,
    )
    assert vit.returncode == 0, vit.stderr[-3000:]

    flat_metrics, vit_metrics = _metrics(runs / "flat"), _metrics(runs / "vit")
    assert flat_metrics["status"] == vit_metrics["status"] == "finished"
    assert (flat_metrics["layer"], flat_metrics["training_width"]) == ("lowrank", 64)
    assert (vit_metrics["layer"], vit_metrics["training_width"]) == ("lowrank", 128)
    assert (flat_metrics["n_hosted_layers"], vit_metrics["n_hosted_layers"]) == (1, 4)

    # its checkpoint loads (the allow-list knows its registered builder) and gives its sizes
    model = load_model(runs / "flat" / "checkpoints" / "last.ckpt")
    assert isinstance(model.layer, LowRankFF)
    images = torch.rand(5, 1, 8, 8)
    layer = model.layer
    hidden = torch.relu(layer.up(images.flatten(1) @ layer.down.weight.T))
    expected = hidden @ layer.out.weight.T + layer.out.bias
    torch.testing.assert_close(model(images), expected)
    sizes = model_sizes(model)
    assert (sizes["layer"], sizes["training_width"], sizes["inference_size"]) == ("lowrank", 64, 64)
    assert (sizes["rank"], sizes["leaf_width"], sizes["n_hosted_layers"]) == (4, None, 1)
    vit_model = load_model(runs / "vit" / "checkpoints" / "last.ckpt")
    assert sum(isinstance(m, LowRankFF) for m in vit_model.modules()) == 4
    assert model_sizes(vit_model)["training_width"] == 128

    # exported, and the export checks the file against the model
    exported = run_cli(
        "fastff.export",
        f"ckpt_path={runs / 'flat' / 'checkpoints' / 'last.ckpt'}",
        "format=torch_export",
        f"hydra.run.dir={tmp_path / 'export'}",
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "export" / "model.pt2").is_file()

    # one bench case: the kind beside the FFF at the same training width (16 = 4 * 2**2)
    bench = run_cli(
        "fastff.bench",
        "mode=table1",
        "implementations=[lowrank,fff]",
        "modes.table1.widths=[16]",
        "modes.table1.leaf_widths=[4]",
        "modes.table1.batch_sizes=[8]",
        "device=cpu",
        "threads=1",
        "timing.min_run_time=0.01",
        "timing.repeats=1",
        "timing.warmup=1",
        "wandb.mode=disabled",
        f"hydra.run.dir={tmp_path / 'bench'}",
        cwd=tmp_path,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    (row,) = pd.read_csv(tmp_path / "bench" / "bench_table1.csv").to_dict("records")
    assert row["t_LowRank_ms"] > 0 and row["LowRank/FFF"] > 0 and row["check"] == "ok"
    # FLOPs per input: 784 * 16 + 16 * 10 (every hidden neuron) vs 784 * (2 + 4) + 4 * 10
    assert row["ideal LowRank/FFF"] == pytest.approx((784 * 16 + 160) / (784 * 6 + 40))

    # the report lists both runs under the kind's name
    report = run_cli("fastff.report", str(runs), "-o", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    listed = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert sorted(listed["layer"]) == ["lowrank", "lowrank"]
    assert sorted(listed["model"]) == ["flat", "vit"]
    assert "lowrank" in (tmp_path / "report" / "report.md").read_text()

    # without the registration, its builder is no checkpoint target fastff allows
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(plugin)])
    kinds.registered.cache_clear()
    with pytest.raises(ForeignTargetError, match=r"lowrank_kind\.lowrank"):
        load_model(runs / "flat" / "checkpoints" / "last.ckpt")


def test_a_registered_kind_is_found_by_name_builder_and_layer(plugin: Path):
    from lowrank_kind import LowRankFF, lowrank

    kind = kinds.get("lowrank")
    assert kinds.names() == ["ff", "fff", "moe", "lowrank"]
    assert kinds.kind_of_builder(lowrank) is kind
    assert kinds.kind_of(LowRankFF(4, 2, 8, 2)) is kind
    assert kinds.targets()["lowrank"] == "lowrank_kind.lowrank"
    layer = lowrank(6, 3, width=32, rank=2, device="meta")
    assert (layer.hidden_width, layer.rank) == (32, 2)


def test_a_registered_kind_is_allowed_as_a_checkpoint_target_only_through_its_builder(plugin):
    from fastff import registry

    def recorded(layer_target: str) -> dict:
        return {
            "data": {"_target_": registry.kinds("data")["digits"]},
            "model": {"_target_": registry.kinds("model")["flat"]},
            "layer": {"_target_": layer_target, "_partial_": True, "rank": 4},
        }

    registry.check_recorded_config(recorded("lowrank_kind.lowrank"))
    for other in ("lowrank_kind.LowRankFF", "lowrank_kind.build_layer"):
        with pytest.raises(ForeignTargetError, match=other.replace(".", r"\.")):
            registry.check_recorded_config(recorded(other))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("lowrank = lowrank_kind:LowRankFF", "must load a fastff.models.kinds.LayerKind"),
        ("other = lowrank_kind:LOWRANK", "named 'other'"),
        ("fff = lowrank_kind:LOWRANK", "named 'fff'"),
    ],
)
def test_a_bad_registration_names_its_entry_point(tmp_path, monkeypatch, entry, message):
    info = tmp_path / "bad_kind-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fastff.layer_kinds]\n{entry}\n")
    monkeypatch.syspath_prepend(str(KINDS))
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds.registered.cache_clear()
    try:
        with pytest.raises(TypeError, match=re.escape(message)):
            kinds.registered()
    finally:
        kinds.registered.cache_clear()
