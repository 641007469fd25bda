"""The report's tables from hand-made runs equal an independent pandas computation on the same
metrics.json files; unfinished runs are listed, never averaged in; the paper's data files hold the
paper's numbers; runs.csv + bench.csv rebuild the same tables byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import bench_rows, write_run

from fastff.report import paper

PNG = b"\x89PNG\r\n\x1a\n"


def expected(root: Path, table: str, dataset: str, keys: list[str]) -> pd.DataFrame:
    """Mean, std (ddof 1) and count over the finished runs of ``table`` on ``dataset``, computed
    from the metrics.json files directly."""
    records = []
    for path in root.rglob("metrics.json"):
        try:
            m = json.loads(path.read_text())
        except ValueError:
            continue
        if m.get("task") == "bench" or m.get("status") != "finished":
            continue
        names = [m["config"]["task_name"], *m["config"]["tags"]]
        if m["dataset"] != dataset or not any(n.startswith(table) for n in names):
            continue
        records.append(
            {
                "layer": m["layer"],
                "leaf_width": m["leaf_width"] or 0,
                "training_width": m["training_width"],
                "hardening": (
                    math.inf
                    if m["config"]["layer"].get("frozen_tree")
                    else m["config"]["layer"].get("hardening", 0)
                    if m["layer"] == "fff"
                    else 0
                ),
                "M_A": m["M_A"],
                "G_A": m["G_A"],
            }
        )
    frame = pd.DataFrame(records)
    return (
        frame.groupby(keys)
        .agg(
            n=("M_A", "size"),
            M_A_mean=("M_A", "mean"),
            M_A_std=("M_A", "std"),
            G_A_mean=("G_A", "mean"),
            G_A_std=("G_A", "std"),
        )
        .reset_index()
    )


def assert_table_matches(csv: Path, want: pd.DataFrame, keys: list[str]) -> None:
    got = pd.read_csv(csv)
    got["leaf_width"] = got["leaf_width"].fillna(0)
    if "hardening" in keys:
        got["hardening"] = got["hardening"].fillna(0)
    assert len(got) == len(want)
    for _, row in want.iterrows():
        hit = got
        for key in keys:
            hit = hit[hit[key] == row[key]]
        assert len(hit) == 1, dict(row)
        hit = hit.iloc[0]
        assert hit["n_runs"] == row["n"]
        for column in ("M_A_mean", "M_A_std", "G_A_mean", "G_A_std"):
            if pd.isna(row[column]):
                assert pd.isna(hit[column]), column
            else:
                assert hit[column] == pytest.approx(row[column], abs=1e-4), column


def test_paper_files_hold_the_papers_numbers():
    t1 = paper.load("table1")
    assert len(t1) == 3 * 5 * 4 and set(t1["dataset"]) == {"usps", "mnist", "fashion_mnist"}
    assert (t1.loc[t1["layer"] == "ff", "speedup"] == 1.0).all()

    def cell(frame: pd.DataFrame, **where: object) -> pd.Series:
        for key, value in where.items():
            frame = frame[frame[key] == value]
        assert len(frame) == 1, where
        return frame.iloc[0]

    usps = cell(t1, dataset="usps", layer="fff", leaf_width=4, training_width=32)
    assert (usps.M_A, usps.G_A, usps.speedup) == (97.2, 89.5, 1.08)
    mnist = cell(t1, dataset="mnist", layer="ff", training_width=16)
    assert (mnist.M_A, mnist.G_A) == (98.0, 95.2)
    fashion = cell(t1, dataset="fashion_mnist", layer="fff", leaf_width=1, training_width=128)
    assert (fashion.M_A, fashion.G_A, fashion.speedup) == (78.7, 77.7, 2.92)
    mnist_l1 = cell(t1, dataset="mnist", layer="fff", leaf_width=1, training_width=128)
    assert mnist_l1.speedup == 3.93

    t2 = paper.load("table2")
    assert len(t2) == 15 and set(t2["dataset"]) == {"cifar10"}
    moe = cell(t2, layer="moe", training_width=512)
    assert (moe.M_A, moe.ETT_M, moe.G_A, moe.ETT_G) == (65.4, 3834, 34.5, 315)
    fff = cell(t2, layer="fff", training_width=64)
    assert (fff.M_A, fff.ETT_M, fff.G_A, fff.ETT_G) == (85.8, 302, 45.9, 22)
    ff = cell(t2, layer="ff", training_width=1024)
    assert (ff.M_A, ff.ETT_M, ff.G_A, ff.ETT_G) == (99.9, 82, 53.0, 21)

    t3 = paper.load("table3")
    assert len(t3) == 7
    l4 = cell(t3, leaf_width=4)
    assert (l4.depth, l4.inference_width, l4.inference_size, l4.speedup, l4.G_A) == (
        5,
        4,
        9,
        3.39,
        81.6,
    )
    ff3 = cell(t3, layer="ff")
    assert (ff3.inference_size, ff3.speedup, ff3.G_A) == (128, 1.0, 84.7)
    assert round(100 * cell(t3, leaf_width=1).G_A / ff3.G_A, 1) == 94.2  # the abstract's 94.2%

    speed = paper.load("speed").set_index("ratio")["value"]
    assert (speed["FF/FFF"], speed["MoE/FFF"]) == (220, 6)


def test_paper_labels():
    assert paper.reference("table1", "usps") == paper.Reference("usps", "paper", True)
    assert paper.reference("table1", "mnist5k").label == "paper (MNIST, full set)"
    assert paper.reference("table1", "digits").dataset is None
    assert paper.reference("table3", "mnist5k") == paper.Reference(
        "cifar10", "paper (CIFAR10)", False
    )
    assert paper.reference("table3", "digits").dataset is None
    assert paper.reference("fig2", "svhn").dataset is None


def test_tables_equal_an_independent_pandas_computation(handmade, bench_dir, report_main, tmp_path):
    out = tmp_path / "report"
    assert report_main(handmade, bench_dir, "-o", out) == 0
    tables = out / "tables"
    assert sorted(p.name for p in tables.glob("*.csv")) == [
        "fig2_svhn.csv",
        "speed.csv",
        "table1_usps.csv",
        "table2_cifar10.csv",
        "table3_mnist5k.csv",
    ]
    keys = ["layer", "leaf_width", "training_width"]
    assert_table_matches(
        tables / "table1_usps.csv", expected(handmade, "table1", "usps", keys), keys
    )
    assert_table_matches(
        tables / "table2_cifar10.csv", expected(handmade, "table2", "cifar10", keys), keys
    )
    keys3 = ["layer", "leaf_width", "hardening"]
    assert_table_matches(
        tables / "table3_mnist5k.csv", expected(handmade, "table3", "mnist5k", keys3), keys3
    )
    assert_table_matches(tables / "fig2_svhn.csv", expected(handmade, "fig2", "svhn", keys), keys)

    t1 = pd.read_csv(tables / "table1_usps.csv")
    # the speedup: bench_table1.csv's FF/FFF at the paper's batch 2048 (not the 256 rows); FF 1.00
    bench = pd.read_csv(next(bench_dir.rglob("bench_table1.csv")))
    bench = bench[bench["batch"] == 2048]
    for row in t1.itertuples():
        if row.layer == "ff":
            assert row.speedup == 1.0
            continue
        hit = bench[
            (bench.training_width == row.training_width) & (bench.leaf_width == row.leaf_width)
        ]
        assert row.speedup == pytest.approx(float(hit["FF/FFF"].iloc[0]), abs=1e-4)
    # the paper's values beside ours, and the differences
    theirs = paper.load("table1")
    theirs = theirs[theirs["dataset"] == "usps"]
    for row in t1.itertuples():
        p = theirs[(theirs.layer == row.layer) & (theirs.training_width == row.training_width)]
        if row.layer == "fff":
            p = p[p.leaf_width == row.leaf_width]
        assert row.paper_G_A == p["G_A"].iloc[0] and row.paper_speedup == p["speedup"].iloc[0]
        assert row.diff_G_A == pytest.approx(row.G_A_mean - row.paper_G_A, abs=1e-3)

    # Table 3: speedup from bench_vit.csv's part=layers rows; the paper's column labelled CIFAR10
    t3 = pd.read_csv(tables / "table3_mnist5k.csv")
    fff = t3[t3["layer"] == "fff"]
    assert list(fff["speedup"].round(4)) == [round(10.0 / 1.0, 4)] * 2  # leaf 8: t_FF / t_FFF
    assert set(fff["paper_G_A"]) == {82.8} and set(t3["paper_dataset"]) == {"cifar10"}
    ff_ga = t3.loc[t3["layer"] == "ff", "G_A_mean"].iloc[0]
    assert list(fff["kept_pct"].round(2)) == list((100 * fff["G_A_mean"] / ff_ga).round(2))
    md3 = (tables / "table3_mnist5k.md").read_text()
    assert "G_A paper (CIFAR10)" in md3 and "inf" in md3

    speed = pd.read_csv(tables / "speed.csv")
    assert list(speed["batch"]) == [1, 256]
    assert set(speed["paper_max_FF_over_FFF"]) == {220}
    assert speed["max_FF_over_FFF"].iloc[0] == pytest.approx(8.0 / 1.3, abs=1e-4)


def test_unfinished_runs_are_counted_and_listed(handmade, report_main, tmp_path):
    out = tmp_path / "report"
    assert report_main(handmade, "-o", out) == 0
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    counts = runs["status"].value_counts().to_dict()
    assert counts == {
        "finished": 25,
        "failed": 1,
        "interrupted": 1,
        "running": 1,
        "missing": 1,
        "unreadable": 1,
    }
    missing = runs[runs["status"] == "missing"].iloc[0]
    assert missing["run_id"] == "sweep_t1/trials/0001" and missing["table"] == "table1"
    assert missing["error"] == "error: out of memory" and str(missing["leaf_width"]) == "2"
    report = (out / "report.md").read_text()
    assert (
        "Runs found: 30: finished 25, failed 1, interrupted 1, running 1, missing 1, unreadable 1"
        in report
    )
    assert "## Runs not finished" in report
    for run_id in ("t1/l8_w16_s3_failed", "t1/ff_w16_s4_interrupted", "t1/broken"):
        assert f"| {run_id} |" in report
    # no bench given: Table 1's speedup column says so
    md1 = (out / "tables" / "table1_usps.md").read_text()
    assert "not measured" in md1 and "M_A paper" in md1


def test_the_benchmark_summary_is_not_a_run(bench_dir, report_main, tmp_path):
    out = tmp_path / "report"
    assert report_main(bench_dir, "-o", out, "--table", "speed") == 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs.empty
    bench = pd.read_csv(out / "bench.csv")
    assert set(bench["mode"]) == {"table1", "vit", "paper_fig3"}
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["speed.csv", "speed.md"]


def test_rebuild_from_csv_is_byte_identical(handmade, bench_dir, report_main, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert report_main(handmade, bench_dir, "-o", first) == 0
    assert report_main(first / "runs.csv", first / "bench.csv", "-o", second) == 0
    names = sorted(p.name for p in (first / "tables").iterdir())
    assert names == sorted(p.name for p in (second / "tables").iterdir())
    for name in names:
        assert (first / "tables" / name).read_bytes() == (second / "tables" / name).read_bytes()
    for name in ("runs.csv", "bench.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # the entropy figures need histories: drawn from metrics.json, skipped from CSV with a note
    assert (first / "figures" / "entropy_table3_mnist5k.png").is_file()
    assert not list((second / "figures").glob("entropy_*"))
    assert "runs.csv holds no per-epoch histories" in (second / "report.md").read_text()


def test_figures_are_pngs_and_plot_the_tables(handmade, bench_dir, report_main, tmp_path):
    from fastff.report import entropy, figures
    from fastff.report.collect import collect
    from fastff.report.tables import build_tables

    out = tmp_path / "report"
    assert report_main(handmade, bench_dir, "-o", out) == 0
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [
        "entropy_fig2_svhn.png",
        "entropy_table1_usps.png",
        "entropy_table2_cifar10.png",
        "entropy_table3_mnist5k.png",
        "fig2_svhn.png",
        "speed_cpu_float32.png",
        "table1_usps.png",
    ]
    for name in names:
        assert (out / "figures" / name).read_bytes()[:8] == PNG
        assert f"](figures/{name})" in (out / "report.md").read_text()

    collected = collect([handmade, bench_dir])
    table = next(
        t for t in build_tables(collected.runs, collected.bench).tables if t.kind == "table1"
    )
    figure = figures.table1_figure(table.frame, table.paper_label)
    ma_axis, ga_axis = figure.axes
    for axis, metric in ((ma_axis, "M_A"), (ga_axis, "G_A")):
        lines = {line.get_label(): line for line in axis.get_lines()}
        assert {"FF", "l=8", "l=4"} <= set(lines)
        for row, group in table.frame.groupby("row"):
            group = group.sort_values("training_width")
            assert list(lines[row].get_xdata()) == list(group["training_width"].astype(float))
            assert list(lines[row].get_ydata()) == pytest.approx(list(group[f"{metric}_mean"]))
            paper_line = lines[f"_paper {row}"]
            assert list(paper_line.get_ydata()) == list(group[f"paper_{metric}"])

    # entropy: level 0 of Table 3's FFF l=8 h=5 at epoch 2, averaged over 2 layers and seeds 0, 1
    curves = entropy.curves(collected.runs, collected.histories)
    point = curves[
        (curves["table"] == "table3")
        & (curves["hardening"] == 5.0)
        & (curves["epoch"] == 2)
        & (curves["level"] == 0)
    ]
    assert point["entropy"].iloc[0] == pytest.approx((0.6 / 2 + 0.6 / 3) / 2)
    assert point["n_runs"].iloc[0] == 2
    levels = curves[(curves["table"] == "table3") & (curves["hardening"] == 5.0)]["level"]
    assert sorted(set(levels)) == [0, 1, 2, 3]  # depth 4 (128 / 8 = 2^4)


def test_a_table_asked_for_builds_alone(handmade, report_main, tmp_path):
    out = tmp_path / "report"
    assert report_main(handmade, "-o", out, "--table", "table3") == 0
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "table3_mnist5k.csv",
        "table3_mnist5k.md",
    ]
    # a second report into the same folder replaces the tables and figures of the first
    assert report_main(handmade, "-o", out, "--table", "fig2") == 0
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["fig2_svhn.csv", "fig2_svhn.md"]
    assert not list((out / "figures").glob("*table3*"))


def test_mixed_experiments_are_skipped_under_all(handmade, report_main, tmp_path):
    write_run(
        handmade / "other" / "ff_w16",
        dataset="usps",
        tags=("table1",),
        task_name="train",
        layer="ff",
        width=16,
        seed=0,
        M_A=1.0,
        G_A=1.0,
        lr=0.2,
    )
    out = tmp_path / "report"
    assert report_main(handmade, "-o", out) == 0
    assert not (out / "tables" / "table1_usps.md").exists()
    report = (out / "report.md").read_text()
    assert "Skipped: table1 on usps mixes 2 experiments" in report
    assert "Adam lr 0.2" in report and "Adam lr 0.01" in report


def test_folders_are_searched_like_a_hydra_multirun(tmp_path):
    from fastff.report.collect import collect

    fields = {"dataset": "usps", "tags": ("table1",), "layer": "ff", "width": 16}
    root = tmp_path / "multirun"
    sweep = root / "2026-12-02" / "10-00-00"
    for job in (0, 1):
        write_run(sweep / str(job), seed=job, M_A=99.0, G_A=90.0, **fields)
    # W&B's, Lightning's and Hydra's own folders are not searched
    for skipped in ("0/wandb/files", "0/checkpoints", "0/.hydra"):
        write_run(sweep / skipped, seed=9, M_A=1.0, G_A=1.0, **fields)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    runs = collect([root]).runs
    assert list(runs["run_id"]) == ["2026-12-02/10-00-00/0", "2026-12-02/10-00-00/1"]
    assert list(runs["seed"]) == [0, 1]
    # a metrics.json given as a file is one run, named by its folder
    single = collect([sweep / "1" / "metrics.json"]).runs
    assert list(single["run_id"]) == ["1"]


def test_table1_input_sizes_are_the_data_modules_flattened_images():
    from fastff.data.digits import DigitsDataModule
    from fastff.data.mnist5k import MNIST5kDataModule
    from fastff.data.torchvision_sets import (
        FashionMNISTDataModule,
        MNISTDataModule,
        USPSDataModule,
    )
    from fastff.report.tables.table1 import INPUT_FEATURES

    modules = {
        "digits": DigitsDataModule,
        "usps": USPSDataModule,
        "mnist": MNISTDataModule,
        "mnist5k": MNIST5kDataModule,
        "fashion_mnist": FashionMNISTDataModule,
    }
    assert set(INPUT_FEATURES) == set(modules)
    for name, module in modules.items():
        channels, height, width = module.input_shape
        assert INPUT_FEATURES[name] == channels * height * width, name


def test_table1_speedups_come_only_from_benchmarks_of_the_data_sets_input_size():
    from fastff.report.tables import table1

    bench = bench_rows()["table1"]  # timed at 256 inputs, USPS's size
    kept, note = table1._bench_for(bench, "digits")
    assert kept[kept["mode"] == "table1"].empty
    assert "64 -> 10" in note and "in_features 256" in note
    kept, note = table1._bench_for(bench, "usps")
    assert len(kept) == len(bench) and note == ""
