"""What every table shares: the :class:`Table` record, the aggregation over seeds, row order,
cell helpers and the sentences above a table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fastff.report import paper
from fastff.report.format import DASH
from fastff.report.run_flags import CAPPED, COLLAPSED, has_flag

TITLES = {
    "table1": "Table 1: FFF vs FF of the same training width",
    "table2": "Table 2: FF vs MoE vs FFF",
    "table3": "Table 3: FFF in a vision transformer",
    "fig2": "Figure 2: FFF vs FF of the same inference size",
    "speed": "Figures 3-4: inference speed, FF vs MoE vs FFF",
    "runs": "Runs by training width, no paper table",
}
"""Each table's heading."""
DECIMALS = 4
"""Decimals of the numbers in the tables' CSV files."""


@dataclass
class Table:
    """One table file.

    Attributes:
        name: the file stem (``table1_digits``): ``tables/<name>.md`` and ``.csv``.
        kind: ``table1``, ``table2``, ``table3``, ``fig2`` or ``speed``.
        dataset: our dataset ("" for the speed table).
        frame: the CSV's contents.
        markdown: the .md file's text, from its ``##`` heading on.
        labels: a readable name of each frame row (for the summary).
        paper_label: the paper column's label ("" when there is none).
        same_data: whether the paper's numbers are on our dataset.
    """

    name: str
    kind: str
    dataset: str
    frame: pd.DataFrame
    markdown: str
    labels: list[str] = field(default_factory=list)
    paper_label: str = ""
    same_data: bool = False


def key_of(value: Any) -> Any:
    """A hashable, comparable form of a cell: None for missing, ints for whole numbers."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if hasattr(value, "item"):
        return key_of(value.item())
    return value


def seed_list(values: pd.Series) -> str:
    """The distinct seeds, sorted, as ``0,1,2``."""
    return ",".join(str(s) for s in sorted({int(v) for v in values.dropna()}))


def aggregate(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per configuration (``keys``): the number of runs, their seeds, mean and std (over
    seeds, ddof 1) of M_A, G_A, ETT_M and ETT_G, and how many runs are flagged ``capped`` or
    ``collapsed`` (``fastff.report.run_flags``)."""
    data = runs.copy()
    for column in ("M_A", "G_A", "ETT_M", "ETT_G"):
        data[column] = data[column].astype("float64")
    flags = data["flags"] if "flags" in data else pd.Series([""] * len(data), index=data.index)
    data["capped"] = flags.map(lambda f: has_flag(f, CAPPED)).astype("int64")
    data["collapsed"] = flags.map(lambda f: has_flag(f, COLLAPSED)).astype("int64")
    grouped = data.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(
        n_runs=("run_id", "size"),
        seeds=("seed", seed_list),
        M_A_mean=("M_A", "mean"),
        M_A_std=("M_A", "std"),
        G_A_mean=("G_A", "mean"),
        G_A_std=("G_A", "std"),
        ETT_M_mean=("ETT_M", "mean"),
        ETT_M_std=("ETT_M", "std"),
        ETT_G_mean=("ETT_G", "mean"),
        ETT_G_std=("ETT_G", "std"),
        n_capped=("capped", "sum"),
        n_collapsed=("collapsed", "sum"),
    )
    return out.reset_index()


FLAG_COLUMNS = ["ETT_M_std", "ETT_G_std", "n_capped", "n_collapsed"]
"""The columns :func:`aggregate` adds for the spread of ETT and the flagged runs."""


def flags_sentence(frame: pd.DataFrame, labels: list[str]) -> str:
    """One sentence naming the configurations with runs that hit their epoch cap (still
    improving: lower bounds) or whose tree collapsed; "" when there are none."""
    parts = []
    for label, r in zip(labels, frame.itertuples(), strict=True):
        notes = []
        if r.n_capped:
            notes.append(f"{r.n_capped} of {r.n_runs} at the epoch cap")
        if r.n_collapsed:
            notes.append(f"{r.n_collapsed} of {r.n_runs} collapsed")
        if notes:
            parts.append(f"{label} ({', '.join(notes)})")
    if not parts:
        return ""
    return (
        "Flagged runs (at the epoch cap: still improving, so M_A, G_A and ETT are lower bounds; "
        "collapsed: the hard tree sends half the training inputs to one leaf or half its reached "
        "units never fire): " + "; ".join(parts) + "."
    )


def finish(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``frame`` in that order, floats rounded to ``DECIMALS`` (the CSV's
    numbers)."""
    frame = frame.loc[:, columns].reset_index(drop=True)
    for column in frame.columns:
        if frame[column].dtype == "float64":
            frame[column] = frame[column].round(DECIMALS)
    return frame


def add_differences(frame: pd.DataFrame, metrics: tuple[str, ...]) -> None:
    """Add ``diff_<metric>`` = ours (mean) - the paper's (NaN where either is missing)."""
    for metric in metrics:
        ours = frame[f"{metric}_mean"].astype("float64")
        frame[f"diff_{metric}"] = ours - frame[f"paper_{metric}"].astype("float64")


def paper_note(ref: paper.Reference, dataset: str, table: str) -> str:
    """The sentence that says what the paper column is (or why there is none)."""
    if ref.dataset is None:
        return f"{dataset} is not in the paper's {TITLES[table].split(':')[0]}: no paper column."
    if ref.same:
        return "Paper: the paper's numbers on the same data set."
    return (
        f"The {ref.label} column is on a different data set from ours ({dataset}): "
        "compare trends, not values."
    )


def runs_sentence(frame: pd.DataFrame) -> str:
    """Runs, configurations and seeds of an aggregated table, in one sentence."""
    counts = sorted(set(frame["n_runs"]))
    seeds = sorted({s for text in frame["seeds"] for s in str(text).split(",") if s}, key=int)
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return (
        f"{int(frame['n_runs'].sum())} finished runs, {len(frame)} configurations, {per} run(s) "
        f"per configuration (seeds {', '.join(seeds) or DASH}); mean ± std over seeds."
    )


def sorted_rows(frame: pd.DataFrame, key: Callable[[pd.Series], tuple]) -> pd.DataFrame:
    """``frame``'s rows sorted by ``key(row)`` (stable: ties keep their order)."""
    order = sorted(range(len(frame)), key=lambda i: key(frame.iloc[i]))
    return frame.iloc[order].reset_index(drop=True)


def leaf_order(row: pd.Series) -> tuple:
    """The paper's row order: FF first, then leaf width descending, then h ascending."""
    leaf = key_of(row["leaf_width"])
    h = key_of(row["hardening"])
    return (row["layer"] != "ff", -(leaf or 0), -1 if h is None else h)


LAYER_ORDER = {"ff": 0, "moe": 1, "fff": 2}
LAYER_NAMES = {"ff": "FF", "moe": "MoE", "fff": "FFF"}
