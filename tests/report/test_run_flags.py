"""Flagged runs (epoch cap, collapsed trees), ETT spread and Table 2's noiseless MoE row."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
from report_helpers import run_metrics, write_run

from fastff.report.run_flags import run_flags


def _routing(metrics: dict, **last: float) -> dict:
    metrics["history"][-1].update({f"routing/layer/{k}": v for k, v in last.items()})
    return metrics


def test_a_run_at_its_epoch_cap_is_capped():
    m = run_metrics(dataset="digits", layer="ff", width=16, seed=0, M_A=1, G_A=1, epochs=5)
    assert run_flags(m) == "capped"  # 5 epochs of at most 5
    m["config"]["trainer"]["max_epochs"] = 40
    assert run_flags(m) == ""
    del m["config"]["trainer"]
    assert run_flags(m) == ""  # no cap recorded: nothing to say


@pytest.mark.parametrize(
    ("depth", "share", "dead", "flagged"),
    [
        (3, 0.6, 0.0, True),  # 60% of the inputs in one of 8 leaves
        (3, 0.3, 0.5, True),  # half the reached units never fire
        (3, 0.3, 0.2, False),
        (1, 0.9, 0.0, False),  # 2 leaves: one holding most inputs says little
    ],
)
def test_collapse_reads_the_last_epochs_routing(depth, share, dead, flagged):
    m = run_metrics(
        dataset="digits", layer="fff", width=2**depth, leaf=1, seed=0, M_A=1, G_A=1, epochs=3
    )
    m["config"]["trainer"]["max_epochs"] = 40
    _routing(m, leaves_reached=0.5, top_leaf_share=share, dead_units=dead)
    assert run_flags(m) == ("collapsed" if flagged else "")
    m["history"][0]["routing/layer/top_leaf_share"] = 1.0  # an earlier epoch does not count
    assert run_flags(m) == ("collapsed" if flagged else "")


def test_runs_recorded_without_routing_are_never_collapsed():
    m = run_metrics(dataset="digits", layer="fff", width=64, leaf=1, seed=0, M_A=1, G_A=1)
    m["config"]["trainer"]["max_epochs"] = 40
    assert run_flags(m) == ""


def test_table2_flags_spread_and_noiseless_moe(tmp_path, report_main):
    """Table 2 on cifar10 with a noisy and a noiseless MoE, flagged runs and varying ETT,
    against counts and standard deviations computed here from the runs written."""
    root = tmp_path / "runs"
    common = {"dataset": "cifar10", "task_name": "table2", "tags": ("table2",), "width": 64}
    written = []
    for seed, epochs in enumerate([10, 7, 4]):  # seed 0 at the cap of 10 epochs
        for layer, noisy in (("ff", None), ("moe", True), ("moe", False), ("fff", None)):
            m = run_metrics(
                layer=layer, seed=seed, M_A=90.0 + seed, G_A=40.0 + seed, epochs=epochs,
                leaf=8 if layer == "fff" else None, **common,  # FFF: depth 3
            )  # fmt: skip
            m["config"]["trainer"]["max_epochs"] = 10
            if noisy is False:
                m["config"]["layer"]["noisy_gating"] = False
            if layer == "fff" and seed == 1:
                _routing(m, leaves_reached=0.5, top_leaf_share=1.0, dead_units=0.0)
            name = f"{layer}_{'q' if noisy is False else 'n'}_{seed}"
            (root / name).mkdir(parents=True)
            (root / name / "metrics.json").write_text(json.dumps(m))
            written.append(m)
    write_run(root / "unrelated", dataset="usps", layer="ff", width=16, seed=0, M_A=1, G_A=1)
    out = tmp_path / "report"
    assert report_main(root, "-o", out, "--table", "table2") == 0
    table = pd.read_csv(out / "tables" / "table2_cifar10.csv")
    assert list(table["row"]) == ["FF", "MoE", "MoE (no noise)", "FFF"]
    assert list(table["gating"].fillna("")) == ["", "noisy", "noiseless", ""]
    assert list(table["n_capped"]) == [1, 1, 1, 1]
    assert list(table["n_collapsed"]) == [0, 0, 0, 1]
    etts = [m["ETT_M"] for m in written if m["layer"] == "ff"]
    assert table.loc[0, "ETT_M_std"] == pytest.approx(statistics.stdev(etts), abs=1e-4)
    # the paper's MoE used noisy gating: no paper numbers beside the noiseless row
    assert table.loc[1, "paper_G_A"] == 29.4 and pd.isna(table.loc[2, "paper_G_A"])
    markdown = (out / "tables" / "table2_cifar10.md").read_text()
    assert "FFF, w=64 (1 of 3 at the epoch cap, 1 of 3 collapsed)" in markdown
    assert f"{statistics.mean(etts):.1f} ± {statistics.stdev(etts):.1f}" in markdown
    runs = pd.read_csv(out / "runs.csv")
    flags = list(runs.loc[runs["dataset"] == "cifar10", "flags"].fillna(""))
    assert flags.count("capped") == 4 and flags.count("collapsed") == 1
