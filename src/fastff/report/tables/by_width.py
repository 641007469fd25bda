"""Runs that belong to no paper table (e.g. a user's own ``--multirun`` grid, without a
``task_name`` or tag naming a table): accuracy vs training width, grouped by the settings that
vary among them, so a report always tabulates what it found."""

from __future__ import annotations

import pandas as pd

from fastff.report.format import DASH, hardening, integer, md_table, mean_std, number
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

SETTINGS = (
    "model",
    "layer",
    "leaf_width",
    "hardening",
    "num_experts",
    "k",
    "gating",
    "task_name",
    "protocol",
)
"""Settings a run may vary besides its width, in the order they label a row. The depth, the
inference width and size follow from these and the width, so they never group runs."""


def varying(runs: pd.DataFrame) -> list[str]:
    """The :data:`SETTINGS` that take more than one value among ``runs``."""
    return [s for s in SETTINGS if runs[s].map(key_of).nunique(dropna=False) > 1]


def _order(value: object) -> tuple:
    """Sort key: numbers by value before text, missing last."""
    value = key_of(value)
    if value is None or value == "":
        return (2, 0, "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def _cell(setting: str, value: object) -> str:
    if setting == "hardening":
        return hardening(value)
    if setting in ("leaf_width", "num_experts", "k"):
        return integer(value)
    return str(value) if value not in (None, "") and value == value else DASH


def build(runs: pd.DataFrame, dataset: str) -> Table:
    """The table of ``runs`` (finished, one dataset, no paper table): per combination of the
    settings that vary and training width, the number of runs, seeds, M_A, G_A, ETT_M, ETT_G."""
    data = runs.copy()
    data["training_width"] = data["training_width"].fillna(data["width"])
    keys = varying(data)
    agg = aggregate(data, [*keys, "training_width"])
    agg = sorted_rows(agg, lambda r: (*(_order(r[k]) for k in keys), _order(r["training_width"])))
    constant = ", ".join(
        f"{s} {_cell(s, data[s].iloc[0])}"
        for s in SETTINGS
        if s not in keys and len(data) and _cell(s, data[s].iloc[0]) != DASH
    )
    alone = str(data["layer"].iloc[0] or "run") if len(data) else "run"
    agg["row"] = [
        ", ".join(f"{k}={_cell(k, getattr(r, k))}" for k in keys) or alone for r in agg.itertuples()
    ]
    agg["dataset"] = dataset
    frame = finish(
        agg,
        [
            "dataset",
            "row",
            *keys,
            "training_width",
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
    headers = ["row", "w", "n", "seeds", "M_A", "G_A", "ETT_M", "ETT_G"]
    cells = [
        [
            r.row,
            integer(r.training_width),
            str(r.n_runs),
            r.seeds or DASH,
            mean_std(r.M_A_mean, r.M_A_std),
            mean_std(r.G_A_mean, r.G_A_std),
            mean_std(r.ETT_M_mean, r.ETT_M_std, 1),
            mean_std(r.ETT_G_mean, r.ETT_G_std, 1),
        ]
        for r in frame.itertuples()
    ]
    grouping = ", ".join(keys) if keys else "nothing but the width"
    text = [
        f"## {TITLES['runs']} ({dataset})",
        "",
        "These finished runs belong to no paper table (no task_name or tag starting with table1, "
        "table2, table3 or fig2), so they are tabulated as found: by training width w, grouped "
        f"by the settings that vary among them ({grouping}).",
        runs_sentence(frame),
        f"The same for every row: {constant}." if constant else "",
        "",
        md_table(headers, cells),
    ]
    labels = [f"{r.row}, w={integer(r.training_width)}" for r in frame.itertuples()]
    flagged = flags_sentence(frame, labels)
    text += ["", flagged] if flagged else []
    best = frame.loc[frame["G_A_mean"].idxmax()] if frame["G_A_mean"].notna().any() else None
    if best is not None:
        text += [
            "",
            f"Best G_A: {number(best['G_A_mean'])} ({best['row']}, "
            f"w={integer(best['training_width'])}).",
        ]
    return Table(
        name=f"runs_{dataset or 'unknown'}",
        kind="runs",
        dataset=dataset,
        frame=frame,
        markdown="\n".join(line for line in text if line is not None),
        labels=labels,
    )
