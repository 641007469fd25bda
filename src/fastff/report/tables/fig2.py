"""Figure 2's numbers: FFF vs FF of the same inference size (the paper shows only a plot)."""

from __future__ import annotations

import pandas as pd

from fastff.report.format import integer, md_table, mean_std
from fastff.report.tables.common import (
    FLAG_COLUMNS,
    TITLES,
    Table,
    aggregate,
    finish,
    flags_sentence,
    key_of,
    runs_sentence,
    sorted_rows,
)


def build(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Figure 2's numbers on ``dataset``: FFF (leaf width l, depth d) and FF of width l + d, at
    equal inference size: M_A and G_A (the paper gives only the plot)."""
    keys = ["layer", "leaf_width", "depth", "training_width", "inference_size", "hardening"]
    agg = aggregate(runs, keys)
    agg = sorted_rows(
        agg,
        lambda r: (
            key_of(r["inference_size"]) or 0,
            r["layer"] != "ff",
            key_of(r["depth"]) or 0,
            key_of(r["leaf_width"]) or 0,
        ),
    )
    agg["row"] = [
        f"FF {integer(r.training_width)}"
        if r.layer == "ff"
        else f"FFF l={integer(r.leaf_width)}, d={integer(r.depth)}"
        for r in agg.itertuples()
    ]
    agg["dataset"] = dataset
    frame = finish(
        agg,
        [
            "dataset",
            "row",
            "layer",
            "leaf_width",
            "depth",
            "training_width",
            "inference_size",
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
        ],
    )
    rows = [
        [
            integer(r.inference_size),
            r.row,
            integer(r.training_width),
            str(r.n_runs),
            mean_std(r.M_A_mean, r.M_A_std),
            mean_std(r.G_A_mean, r.G_A_std),
            mean_std(r.ETT_M_mean, r.ETT_M_std, 1),
            mean_std(r.ETT_G_mean, r.ETT_G_std, 1),
        ]
        for r in frame.itertuples()
    ]
    text = [
        f"## {TITLES['fig2']} ({dataset})",
        "",
        runs_sentence(frame),
        "The paper shows this comparison only as a plot (no numbers): the FFF leads clearly on "
        "M_A; on G_A it leads early, then both plateau.",
        "",
        md_table(
            ["inference size", "model", "training width", "n", "M_A", "G_A", "ETT_M", "ETT_G"],
            rows,
        ),
    ]
    labels = [f"{r.row}" for r in frame.itertuples()]
    flagged = flags_sentence(frame, labels)
    text += ["", flagged] if flagged else []
    return Table(f"fig2_{dataset}", "fig2", dataset, frame, "\n".join(text), labels)
