"""Table 2: FF vs MoE vs FFF per training width (M_A and G_A with their ETT)."""

from __future__ import annotations

import math

import pandas as pd

from fastff.report import paper
from fastff.report.format import (
    DASH,
    integer,
    md_table,
    mean_std,
    number,
    signed,
)
from fastff.report.tables.common import (
    FLAG_COLUMNS,
    LAYER_NAMES,
    LAYER_ORDER,
    TITLES,
    Table,
    add_differences,
    aggregate,
    finish,
    flags_sentence,
    key_of,
    paper_note,
    runs_sentence,
    sorted_rows,
)

NOISELESS = "noiseless"
"""An MoE without gating noise (``noisy_gating=false``): its own row, no paper column."""


def build(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Table 2 on ``dataset``: FF, MoE and FFF per training width: M_A and G_A with their ETT."""
    runs = runs.assign(gating=runs.get("gating", ""))
    agg = aggregate(runs, ["layer", "gating", "leaf_width", "training_width"])
    agg = sorted_rows(
        agg,
        lambda r: (
            key_of(r["training_width"]) or 0,
            LAYER_ORDER.get(r["layer"], 9),
            r["gating"] == NOISELESS,
            -(key_of(r["leaf_width"]) or 0),
        ),
    )
    several_leaves = agg.loc[agg["layer"] == "fff", "leaf_width"].nunique() > 1
    agg["row"] = [
        LAYER_NAMES.get(r.layer, r.layer)
        + (f" l={integer(r.leaf_width)}" if r.layer == "fff" and several_leaves else "")
        + (" (no noise)" if r.gating == NOISELESS else "")
        for r in agg.itertuples()
    ]
    ref = paper.reference("table2", dataset)
    theirs = {
        (r.layer, key_of(r.training_width)): r for r in paper.numbers("table2", ref).itertuples()
    }
    records = []
    for r in agg.itertuples():
        # the paper's FFF has l = 32, its MoE noisy gating
        paper_like = (r.layer != "fff" or key_of(r.leaf_width) == 32) and r.gating != NOISELESS
        p = theirs.get((r.layer, key_of(r.training_width))) if paper_like else None
        records.append(
            {
                **r._asdict(),
                "dataset": dataset,
                "paper_dataset": ref.dataset or "",
                **{
                    f"paper_{m}": getattr(p, m) if p is not None else math.nan
                    for m in ("M_A", "ETT_M", "G_A", "ETT_G")
                },
            }
        )
    frame = pd.DataFrame(records)
    add_differences(frame, ("M_A", "G_A"))
    for column in ("paper_ETT_M", "paper_ETT_G"):
        frame[column] = frame[column].astype("float64")
    frame = finish(
        frame,
        [
            "dataset",
            "row",
            "layer",
            "gating",
            "leaf_width",
            "training_width",
            "n_runs",
            "seeds",
            "M_A_mean",
            "M_A_std",
            "ETT_M_mean",
            "G_A_mean",
            "G_A_std",
            "ETT_G_mean",
            *FLAG_COLUMNS,
            "paper_dataset",
            "paper_M_A",
            "paper_ETT_M",
            "paper_G_A",
            "paper_ETT_G",
            "diff_M_A",
            "diff_G_A",
        ],
    )
    rows = list(dict.fromkeys(frame["row"]))
    widths = sorted({key_of(w) for w in frame["training_width"]})
    grid = []
    for w in widths:
        cells = [str(w)]
        for row in rows:
            hit = frame[(frame["row"] == row) & (frame["training_width"] == w)]
            for m in ("M_A", "G_A"):
                if hit.empty:
                    cells.append(DASH)
                    continue
                h = hit.iloc[0]
                ett = h[f"ETT_{m[0]}_mean"]
                cells.append(f"{number(h[f'{m}_mean'], 1)} ({number(ett, 0)})")
        grid.append(cells)
    compare = ref.dataset is not None
    headers = ["layer", "w", "n", "M_A", "ETT_M"]
    headers += [f"M_A (ETT) {ref.label}", "Δ M_A"] if compare else []
    headers += ["G_A", "ETT_G"] + ([f"G_A (ETT) {ref.label}", "Δ G_A"] if compare else [])
    detail = []
    for r in frame.itertuples():
        cells = [r.row, integer(r.training_width), str(r.n_runs)]
        cells += [mean_std(r.M_A_mean, r.M_A_std), mean_std(r.ETT_M_mean, r.ETT_M_std, 1)]
        if compare:
            cells += [f"{number(r.paper_M_A, 1)} ({integer(r.paper_ETT_M)})", signed(r.diff_M_A)]
        cells += [mean_std(r.G_A_mean, r.G_A_std), mean_std(r.ETT_G_mean, r.ETT_G_std, 1)]
        if compare:
            cells += [f"{number(r.paper_G_A, 1)} ({integer(r.paper_ETT_G)})", signed(r.diff_G_A)]
        detail.append(cells)
    text = [
        f"## {TITLES['table2']} ({dataset})",
        "",
        runs_sentence(frame),
        paper_note(ref, dataset, "table2"),
        "",
        "Ours (mean over seeds): accuracy % (mean ETT, epochs).",
        "",
        md_table(["w", *(f"{row} {m}" for row in rows for m in ("M_A", "G_A"))], grid),
        "",
        "Per configuration"
        + (" (Δ = ours - paper; the paper's FFF has leaf width 32):" if compare else ":"),
        "",
        md_table(headers, detail),
    ]
    labels = [f"{r.row}, w={integer(r.training_width)}" for r in frame.itertuples()]
    flagged = flags_sentence(frame, labels)
    text += ["", flagged] if flagged else []
    return Table(
        f"table2_{dataset}", "table2", dataset, frame, "\n".join(text), labels, ref.label, ref.same
    )
