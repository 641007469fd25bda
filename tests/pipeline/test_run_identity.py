"""metrics.json records what a run is (experiment, data config, layer kind, hardening, gating)
from the moment it starts, so the report never works it out from config names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastff.results_schema import IDENTITY_KEYS, SCHEMA_VERSION
from fastff.train import train
from fastff.training.results import run_identity
from fastff.training.run_results import RunResults

QUICK = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu")


def _identity(make_cfg, *overrides: str) -> dict:
    return run_identity(OmegaConf.to_container(make_cfg(*overrides), resolve=True), {})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            (),
            {"experiment": None, "data_config": "digits", "layer": "fff", "hardening": 3.0},
        ),
        (
            ("experiment=table1", "data=usps", "layer.hardening=5"),
            {"experiment": "table1", "data_config": "usps", "hardening": 5.0},
        ),
        (
            ("experiment=table3_mnist5k", "layer=fff", "layer.leaf_width=8"),
            {"experiment": "table3", "data_config": "mnist5k", "layer": "fff"},
        ),
        (
            ("variant=fff_l8_frozen", "tags=[fig2_x]"),
            {"experiment": "fig2", "frozen_tree": True, "gating": None},
        ),
        (
            ("layer=moe",),
            {"layer": "moe", "gating": "noisy", "hardening": None, "frozen_tree": None},
        ),
        (("variant=moe_noiseless",), {"layer": "moe", "gating": "noiseless"}),
        (("layer=ff", "data=fashion_mnist"), {"layer": "ff", "data_config": "fashion_mnist"}),
    ],
)
def test_identity_from_the_run_config(make_cfg, overrides, expected):
    identity = _identity(make_cfg, *overrides)
    assert set(IDENTITY_KEYS) <= set(identity)
    for key, value in expected.items():
        assert identity[key] == value, key


def test_hydra_choices_name_the_configs(make_cfg):
    config = OmegaConf.to_container(make_cfg(), resolve=True)
    identity = run_identity(config, {"data": "my_digits", "layer": "my_fff"})
    assert identity["data_config"] == "my_digits" and identity["layer"] == "my_fff"


def test_every_metrics_json_records_its_identity(make_cfg):
    cfg = make_cfg("variant=moe_noiseless", "experiment=table1", "data=digits", *QUICK)
    cfg.trainer.fast_dev_run = True
    train(cfg)
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION == 3
    assert written["experiment"] == "table1" and written["data_config"] == "digits"
    assert written["layer"] == "moe" and written["gating"] == "noiseless"
    assert written["num_experts"] == 128 // 16 and written["k"] == 2  # from the built layer
    assert written["hardening"] is None and written["frozen_tree"] is None


def test_a_run_that_fails_before_its_data_still_says_what_it_was(make_cfg, tmp_path):
    cfg = make_cfg("experiment=table1", "data=mnist", "data.download=false", *QUICK)
    cfg.paths.data_dir = str(tmp_path / "no_data")
    with pytest.raises(Exception, match="not found"):
        train(cfg)
    written = json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())
    assert written["status"] == "failed"
    assert written["experiment"] == "table1" and written["data_config"] == "mnist"
    assert written["layer"] == "fff" and written["hardening"] == 3.0


def test_results_without_a_config_record_no_identity(tmp_path):
    from fastff.training.protocol import PaperProtocol

    results = RunResults(tmp_path / "metrics.json", PaperProtocol(), {"seed": 1}, test=False)
    assert not set(IDENTITY_KEYS) & set(results.results)
