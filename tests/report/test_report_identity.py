"""The report reads what a run is from the fields its metrics.json recorded, never from config
names; runs written before those fields existed are derived once, in one function."""

from __future__ import annotations

import math
from typing import Any

import pytest
from report_helpers import run_metrics

from fastff.report import rows
from fastff.results_schema import IDENTITY_KEYS

IDENTITY = ("table", "dataset", "model", "layer", "hardening", "num_experts", "k", "gating", "seed")


def _recorded(metrics: dict[str, Any], **identity: Any) -> dict[str, Any]:
    """``metrics`` as schema 3 writes it: the identity keys recorded."""
    fields = dict.fromkeys(IDENTITY_KEYS)
    return {**metrics, "schema_version": 3, **fields, **identity}


def _row(metrics: dict[str, Any]) -> dict[str, Any]:
    row = rows.row_from_metrics(metrics, "run")
    return {key: row[key] for key in IDENTITY}


def _misleading(metrics: dict[str, Any]) -> dict[str, Any]:
    """The same run with a config whose names all point elsewhere."""
    config = {
        **metrics["config"],
        "task_name": "table2_x",
        "tags": ["table3"],
        "data": {"_target_": "fastff.data.torchvision_sets.CIFAR10DataModule"},
        "layer": {"_target_": "fastff.models.layer_builders.moe", "num_experts": 99, "k": 9},
        "model": {"name": "vit"},
        "seed": 77,
    }
    return {**metrics, "config": config}


def test_recorded_fields_win_over_the_config(monkeypatch):
    metrics = run_metrics(dataset="usps", layer="fff", leaf=8, width=64, seed=1, M_A=1, G_A=1)
    metrics = _misleading(_recorded(metrics, experiment="table1", data_config="usps"))
    metrics |= {"hardening": 5.0, "frozen_tree": False}
    monkeypatch.setattr(rows, "derived_identity", _never)
    assert _row(metrics) == {
        "table": "table1",
        "dataset": "usps",
        "model": "flat",
        "layer": "fff",
        "hardening": 5.0,
        "num_experts": None,
        "k": None,
        "gating": "",
        "seed": 1,
    }


def test_recorded_moe_and_frozen_tree(monkeypatch):
    monkeypatch.setattr(rows, "derived_identity", _never)
    moe = run_metrics(dataset="cifar10", layer="moe", width=64, seed=0, M_A=1, G_A=1)
    moe = _misleading(_recorded(moe, experiment="table2", gating="noiseless"))
    assert _row(moe) == {
        "table": "table2",
        "dataset": "cifar10",
        "model": "flat",
        "layer": "moe",
        "hardening": None,
        "num_experts": 4,
        "k": 2,
        "gating": "noiseless",
        "seed": 0,
    }
    fff = run_metrics(dataset="mnist5k", layer="fff", leaf=1, width=128, seed=0, M_A=1, G_A=1)
    fff = _recorded(fff, experiment="table3", hardening=5.0, frozen_tree=True)
    assert _row(fff)["hardening"] == math.inf


def test_a_run_that_failed_before_its_data_is_named_by_its_data_config(monkeypatch):
    monkeypatch.setattr(rows, "derived_identity", _never)
    metrics = run_metrics(dataset="x", layer="ff", width=16, seed=0, M_A=None, G_A=None)
    metrics = _recorded({**metrics, "dataset": None}, data_config="mnist", experiment="table1")
    assert _row(metrics)["dataset"] == "mnist" and _row(metrics)["table"] == "table1"


def _never(metrics):
    raise AssertionError("a run that recorded its identity is derived from its config")


# Runs written before the identity was recorded (schema 2): the derivation, computed by hand.
OLD = [
    (
        {"dataset": "usps", "layer": "fff", "leaf": 8, "width": 64, "seed": 2},
        {"task_name": "table1"},
        {"table": "table1", "layer": "fff", "hardening": 3.0, "num_experts": None, "gating": ""},
    ),
    (
        {"dataset": "mnist5k", "layer": "fff", "leaf": 1, "width": 128, "seed": 0},
        {"tags": ["sweep_y", "table3_mnist5k"], "frozen": True},
        {"table": "table3", "hardening": math.inf, "model": "flat", "seed": 0},
    ),
    (
        {"dataset": "cifar10", "layer": "moe", "width": 64, "seed": 1},
        {"task_name": "table2_cifar10"},
        {"table": "table2", "num_experts": 4, "k": 2, "gating": "noisy", "hardening": None},
    ),
    (
        {"dataset": "digits", "layer": "ff", "width": 16, "seed": 0},
        {},
        {"table": "", "layer": "ff", "num_experts": None, "k": None, "gating": ""},
    ),
]


@pytest.mark.parametrize(("fields", "more", "expected"), OLD)
def test_old_runs_are_derived_once(monkeypatch, fields, more, expected):
    tags = tuple(more.get("tags", ()))
    frozen = more.get("frozen", False)
    task_name = more.get("task_name", "train")
    metrics = run_metrics(**fields, M_A=90, G_A=80, tags=tags, frozen=frozen, task_name=task_name)
    calls = []
    derive = rows.derived_identity
    monkeypatch.setattr(rows, "derived_identity", lambda m: calls.append(1) or derive(m))
    row = _row(metrics)
    assert len(calls) == 1
    for key, value in expected.items():
        assert row[key] == value, key
    assert row["dataset"] == fields["dataset"]


def test_old_run_without_sizes_gets_its_kind_from_the_layer_builder():
    metrics = run_metrics(dataset="usps", layer="moe", width=64, seed=0, M_A=None, G_A=None)
    for key in ("layer", "dataset", "num_experts", "k"):
        metrics.pop(key)
    metrics["config"]["data"] = {"_target_": "fastff.data.torchvision_sets.USPSDataModule"}
    identity = rows.run_identity(metrics)
    assert identity["layer"] == "moe" and identity["k"] == 2 and identity["gating"] == "noisy"
    assert identity["dataset"] == "usps"


def test_each_recorded_field_changes_the_row():
    metrics = _recorded(
        run_metrics(dataset="usps", layer="fff", leaf=8, width=64, seed=1, M_A=1, G_A=1)
    )
    assert _row(metrics)["table"] == "" and _row(metrics)["hardening"] is None
    assert _row({**metrics, "experiment": "table2"})["table"] == "table2"
    assert _row({**metrics, "hardening": 7.0})["hardening"] == 7.0
    assert _row({**metrics, "gating": "noiseless"})["gating"] == "noiseless"
    assert _row({**metrics, "dataset": None, "data_config": "svhn"})["dataset"] == "svhn"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"variant": "fff_l8_d2_h0"}, {"layer": "fff", "leaf_width": 8, "depth": 2, "width": None}),
        ({"variant": "ff_w10"}, {"layer": "ff", "width": 10, "leaf_width": None}),
        ({"variant": "moe_noiseless", "layer.width": 64}, {"layer": "moe", "width": 64}),
        ({"variant": "fff_l2", "layer.width": 32}, {"layer": "fff", "leaf_width": 2, "width": 32}),
        ({"variant": "../../etc/passwd"}, {"layer": "", "width": None}),
        ({"experiment": "table3_mnist5k", "layer": "ff"}, {"table": "table3", "layer": "ff"}),
        ({"experiment": "table1", "tags": "[fig2,x]"}, {"table": "table1"}),  # task_name first
        ({"tags": "[sweep_x,fig2_x]"}, {"table": "fig2"}),
    ],
)
def test_a_trial_without_metrics_reads_its_presets(params, expected):
    row = rows.row_from_trial({"data": "digits", "seed": 0, **params}, "trial", "missing")
    for key, value in expected.items():
        assert row[key] == value, key
