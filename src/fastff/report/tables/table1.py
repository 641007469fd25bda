"""Table 1: FFF vs FF of the same training width, per dataset (M_A, G_A, speedup)."""

from __future__ import annotations

import math

import pandas as pd

from fastff.report import bench as bench_rows
from fastff.report import paper
from fastff.report.format import (
    DASH,
    NOT_MEASURED,
    hardening,
    integer,
    md_table,
    mean_std,
    number,
    signed,
)
from fastff.report.tables.common import (
    FLAG_COLUMNS,
    TITLES,
    Table,
    add_differences,
    aggregate,
    finish,
    flags_sentence,
    key_of,
    leaf_order,
    paper_note,
    runs_sentence,
    sorted_rows,
)

INPUT_FEATURES = {"digits": 64, "usps": 256, "mnist": 784, "mnist5k": 784, "fashion_mnist": 784}
"""Flattened image size of each Table 1 data set (the flat net's 784 -> 10 etc.): a benchmark row
gives this table's speedup only when it timed layers of the data set's input size."""


def _bench_for(bench: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, str]:
    """The benchmark rows timed at ``dataset``'s input size, and why there are none (or "")."""
    if bench.empty or "in" not in bench or dataset not in INPUT_FEATURES:
        return bench, ""
    size = INPUT_FEATURES[dataset]
    timed = pd.to_numeric(bench["in"], errors="coerce")
    other = bench[(bench["mode"] == "table1") & (timed != size)] if "mode" in bench else bench
    kept = bench[~bench.index.isin(other.index)]
    if other.empty or not kept[kept.get("mode") == "table1"].empty:
        return kept, ""
    sizes = ", ".join(str(int(v)) for v in sorted(set(pd.to_numeric(other["in"]).dropna())))
    return kept, (
        f"Speedup: not measured at this data set's input size ({size} -> 10; bench_table1.csv "
        f"timed in_features {sizes}: run `python -m fastff.bench mode=table1 "
        f"modes.table1.in_features={size}` and give its folder as a source)."
    )


def build(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Table 1 on ``dataset``: FF and FFF (per leaf width) per training width: M_A, G_A and the
    speedup FF/FFF from ``bench_table1.csv`` (else not measured)."""
    agg = aggregate(runs, ["layer", "leaf_width", "depth", "training_width", "hardening"])
    agg = sorted_rows(agg, lambda r: (*leaf_order(r), key_of(r["training_width"]) or 0))
    several_h = agg.loc[agg["layer"] == "fff", "hardening"].nunique(dropna=False) > 1
    agg["row"] = [
        "FF"
        if r.layer == "ff"
        else f"l={integer(r.leaf_width)}" + (f", h={hardening(r.hardening)}" if several_h else "")
        for r in agg.itertuples()
    ]
    bench, size_note = _bench_for(bench, dataset)
    selection = bench_rows.select(bench, "table1")
    measured = not selection.rows.empty
    speed = bench_rows.speedups(selection, ["training_width", "leaf_width"]) if measured else None
    ref = paper.reference("table1", dataset)
    theirs = {
        (r.layer, key_of(r.leaf_width), key_of(r.training_width)): r
        for r in paper.numbers("table1", ref).itertuples()
    }
    records = []
    for r in agg.itertuples():
        tw, leaf = key_of(r.training_width), key_of(r.leaf_width)
        if r.layer == "ff":
            speedup = 1.0 if measured else math.nan
        else:
            speedup = float(speed.get((tw, leaf), math.nan)) if measured else math.nan
        p = theirs.get((r.layer, leaf, tw))
        records.append(
            {
                **r._asdict(),
                "dataset": dataset,
                "speedup": speedup,
                "paper_dataset": ref.dataset or "",
                "paper_M_A": p.M_A if p is not None else math.nan,
                "paper_G_A": p.G_A if p is not None else math.nan,
                "paper_speedup": p.speedup if p is not None else math.nan,
            }
        )
    frame = pd.DataFrame(records)
    add_differences(frame, ("M_A", "G_A"))
    frame = finish(
        frame,
        [
            "dataset",
            "row",
            "layer",
            "leaf_width",
            "depth",
            "training_width",
            "hardening",
            "n_runs",
            "seeds",
            "M_A_mean",
            "M_A_std",
            "G_A_mean",
            "G_A_std",
            "ETT_M_mean",
            "ETT_G_mean",
            *FLAG_COLUMNS,
            "speedup",
            "paper_dataset",
            "paper_M_A",
            "paper_G_A",
            "paper_speedup",
            "diff_M_A",
            "diff_G_A",
        ],
    )
    speed_cell = (lambda v: number(v)) if measured else (lambda v: NOT_MEASURED)
    widths = sorted({key_of(w) for w in frame["training_width"]})
    grid = []
    for row in dict.fromkeys(frame["row"]):
        cells = []
        for w in widths:
            hit = frame[(frame["row"] == row) & (frame["training_width"] == w)]
            if hit.empty:
                cells.append(DASH)
                continue
            h = hit.iloc[0]
            s = number(h["speedup"]) if measured else "n.m."
            cells.append(f"{number(h['M_A_mean'], 1)} / {number(h['G_A_mean'], 1)} / {s}")
        grid.append([row, *cells])
    compare = ref.dataset is not None
    headers = ["row", "w", "d", "n", "M_A"]
    headers += [f"M_A {ref.label}", "Δ M_A"] if compare else []
    headers += ["G_A"] + ([f"G_A {ref.label}", "Δ G_A"] if compare else [])
    headers += ["ETT_M", "ETT_G", "speedup"] + ([f"speedup {ref.label}"] if compare else [])
    detail = []
    for r in frame.itertuples():
        cells = [r.row, integer(r.training_width), integer(r.depth), str(r.n_runs)]
        cells.append(mean_std(r.M_A_mean, r.M_A_std))
        cells += [number(r.paper_M_A, 1), signed(r.diff_M_A)] if compare else []
        cells.append(mean_std(r.G_A_mean, r.G_A_std))
        cells += [number(r.paper_G_A, 1), signed(r.diff_G_A)] if compare else []
        cells += [
            mean_std(r.ETT_M_mean, r.ETT_M_std, 1),
            mean_std(r.ETT_G_mean, r.ETT_G_std, 1),
            speed_cell(r.speedup),
        ]
        cells += [number(r.paper_speedup)] if compare else []
        detail.append(cells)
    text = [
        f"## {TITLES['table1']} ({dataset})",
        "",
        runs_sentence(frame),
        paper_note(ref, dataset, "table1"),
        selection.note + "."
        if measured
        else size_note or "Speedup: not measured (no bench_table1.csv given).",
        "",
        "Ours (mean over seeds): M_A / G_A (%) / speedup (FF/FFF time"
        + (")." if measured else "; n.m.: not measured)."),
        "",
        md_table([dataset, *(f"w={w}" for w in widths)], grid),
        "",
        "Per configuration" + (" (Δ = ours - paper):" if compare else ":"),
        "",
        md_table(headers, detail),
    ]
    labels = [f"{r.row}, w={integer(r.training_width)}" for r in frame.itertuples()]
    flagged = flags_sentence(frame, labels)
    text += ["", flagged] if flagged else []
    return Table(
        f"table1_{dataset}",
        "table1",
        dataset,
        frame,
        "\n".join(text),
        labels,
        ref.label,
        ref.same,
    )
