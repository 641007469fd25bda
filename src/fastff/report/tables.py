"""The paper's tables from our runs: mean +- std over seeds, the paper's value beside ours.

Every table is built from the finished runs of one experiment (``table`` column of the runs) on
one dataset, as a frame (the CSV file) and a markdown text in the paper's layout followed by a
table per configuration with the paper's numbers and the differences. Unfinished runs are never
averaged in (the report lists them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fastff.report import bench as bench_rows
from fastff.report import paper
from fastff.report.errors import ReportError
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
from fastff.report.rows import FINISHED, TABLES

CHOICES = (*TABLES, "speed", "all")
"""Values of ``--table``."""
TITLES = {
    "table1": "Table 1: FFF vs FF of the same training width",
    "table2": "Table 2: FF vs MoE vs FFF",
    "table3": "Table 3: FFF in a vision transformer",
    "fig2": "Figure 2: FFF vs FF of the same inference size",
    "speed": "Figures 3-4: inference speed, FF vs MoE vs FFF",
}
LAYERS = {"table1": ("ff", "fff"), "table2": ("ff", "moe", "fff"), "fig2": ("ff", "fff")}
"""The layers each table compares (Table 3: every run)."""
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


@dataclass
class Built:
    """The tables built, and notes for report.md (tables skipped and why)."""

    tables: list[Table]
    notes: list[str]


# ------------------------------------------------------------------------------------- helpers
def _key(value: Any) -> Any:
    """A hashable, comparable form of a cell: None for missing, ints for whole numbers."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if hasattr(value, "item"):
        return _key(value.item())
    return value


def _seeds(values: pd.Series) -> str:
    return ",".join(str(s) for s in sorted({int(v) for v in values.dropna()}))


def aggregate(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per configuration (``keys``): the number of runs, their seeds, and mean and std (over
    seeds, ddof 1) of M_A and G_A, mean ETT_M and ETT_G."""
    data = runs.copy()
    for column in ("M_A", "G_A", "ETT_M", "ETT_G"):
        data[column] = data[column].astype("float64")
    grouped = data.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(
        n_runs=("run_id", "size"),
        seeds=("seed", _seeds),
        M_A_mean=("M_A", "mean"),
        M_A_std=("M_A", "std"),
        G_A_mean=("G_A", "mean"),
        G_A_std=("G_A", "std"),
        ETT_M_mean=("ETT_M", "mean"),
        ETT_G_mean=("ETT_G", "mean"),
    )
    return out.reset_index()


def _finish(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame.loc[:, columns].reset_index(drop=True)
    for column in frame.columns:
        if frame[column].dtype == "float64":
            frame[column] = frame[column].round(DECIMALS)
    return frame


def _diff(ours: Any, theirs: Any) -> float:
    if ours is None or theirs is None or pd.isna(ours) or pd.isna(theirs):
        return math.nan
    return float(ours) - float(theirs)


def _paper_note(ref: paper.Reference, dataset: str, table: str) -> str:
    if ref.dataset is None:
        return f"{dataset} is not in the paper's {TITLES[table].split(':')[0]}: no paper column."
    if ref.same:
        return "Paper: the paper's numbers on the same data set."
    return (
        f"Paper column: {ref.label}, a different data set from ours ({dataset}): compare trends, "
        "not values."
    )


def _runs_sentence(frame: pd.DataFrame) -> str:
    counts = sorted(set(frame["n_runs"]))
    seeds = sorted({s for text in frame["seeds"] for s in text.split(",") if s})
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return (
        f"{int(frame['n_runs'].sum())} finished runs, {len(frame)} configurations, {per} run(s) "
        f"per configuration (seeds {', '.join(seeds) or DASH}); mean ± std over seeds."
    )


def _sorted(frame: pd.DataFrame, key: Callable[[pd.Series], tuple]) -> pd.DataFrame:
    order = sorted(range(len(frame)), key=lambda i: key(frame.iloc[i]))
    return frame.iloc[order].reset_index(drop=True)


def _leaf_order(row: pd.Series) -> tuple:
    leaf = _key(row["leaf_width"])
    h = _key(row["hardening"])
    return (row["layer"] != "ff", -(leaf or 0), -1 if h is None else h)


# ------------------------------------------------------------------------------------ Table 1
def table1(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Table 1 on ``dataset``: FF and FFF (per leaf width) per training width: M_A, G_A and the
    speedup FF/FFF from ``bench_table1.csv`` (else not measured)."""
    agg = aggregate(runs, ["layer", "leaf_width", "depth", "training_width", "hardening"])
    agg = _sorted(agg, lambda r: (*_leaf_order(r), _key(r["training_width"])))
    several_h = agg.loc[agg["layer"] == "fff", "hardening"].nunique(dropna=False) > 1
    agg["row"] = [
        "FF" if r.layer == "ff" else f"l={integer(r.leaf_width)}"
        + (f", h={hardening(r.hardening)}" if several_h else "")
        for r in agg.itertuples()
    ]
    selection = bench_rows.select(bench, "table1")
    measured = not selection.rows.empty
    speed = bench_rows.speedups(selection, ["training_width", "leaf_width"]) if measured else None
    ref = paper.reference("table1", dataset)
    theirs = {
        (r.layer, _key(r.leaf_width), _key(r.training_width)): r
        for r in paper.numbers("table1", ref).itertuples()
    }
    records = []
    for r in agg.itertuples():
        tw, leaf = _key(r.training_width), _key(r.leaf_width)
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
    frame["diff_M_A"] = [_diff(a, b) for a, b in zip(frame.M_A_mean, frame.paper_M_A, strict=True)]
    frame["diff_G_A"] = [_diff(a, b) for a, b in zip(frame.G_A_mean, frame.paper_G_A, strict=True)]
    frame = _finish(
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
    widths = sorted({_key(w) for w in frame["training_width"]})
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
        cells += [number(r.ETT_M_mean, 1), number(r.ETT_G_mean, 1), speed_cell(r.speedup)]
        cells += [number(r.paper_speedup)] if compare else []
        detail.append(cells)
    text = [
        f"## {TITLES['table1']} ({dataset})",
        "",
        _runs_sentence(frame),
        _paper_note(ref, dataset, "table1"),
        selection.note + "." if measured else "Speedup: not measured (no bench_table1.csv given).",
        "",
        "Ours (mean over seeds): M_A / G_A (%) / speedup (FF/FFF time"
        + (")." if measured else "; n.m.: not measured)."),
        "",
        md_table([dataset, *(f"w={w}" for w in widths)], grid),
        "",
        "Per configuration (Δ = ours - paper):",
        "",
        md_table(headers, detail),
    ]
    labels = [f"{r.row}, w={integer(r.training_width)}" for r in frame.itertuples()]
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


# ------------------------------------------------------------------------------------ Table 2
LAYER_ORDER = {"ff": 0, "moe": 1, "fff": 2}
LAYER_NAMES = {"ff": "FF", "moe": "MoE", "fff": "FFF"}


def table2(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Table 2 on ``dataset``: FF, MoE and FFF per training width: M_A and G_A with their ETT."""
    agg = aggregate(runs, ["layer", "leaf_width", "training_width"])
    agg = _sorted(
        agg,
        lambda r: (
            _key(r["training_width"]),
            LAYER_ORDER.get(r["layer"], 9),
            -(_key(r["leaf_width"]) or 0),
        ),
    )
    several_leaves = agg.loc[agg["layer"] == "fff", "leaf_width"].nunique() > 1
    agg["row"] = [
        LAYER_NAMES.get(r.layer, r.layer)
        + (f" l={integer(r.leaf_width)}" if r.layer == "fff" and several_leaves else "")
        for r in agg.itertuples()
    ]
    ref = paper.reference("table2", dataset)
    theirs = {(r.layer, _key(r.training_width)): r for r in paper.numbers("table2", ref).itertuples()}
    records = []
    for r in agg.itertuples():
        paper_leaf_ok = r.layer != "fff" or _key(r.leaf_width) == 32  # the paper's FFF: l = 32
        p = theirs.get((r.layer, _key(r.training_width))) if paper_leaf_ok else None
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
    for m in ("M_A", "G_A"):
        frame[f"diff_{m}"] = [
            _diff(a, b) for a, b in zip(frame[f"{m}_mean"], frame[f"paper_{m}"], strict=True)
        ]
    for column in ("paper_ETT_M", "paper_ETT_G"):
        frame[column] = frame[column].astype("float64")
    frame = _finish(
        frame,
        [
            "dataset",
            "row",
            "layer",
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
    widths = sorted({_key(w) for w in frame["training_width"]})
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
        cells += [mean_std(r.M_A_mean, r.M_A_std), number(r.ETT_M_mean, 1)]
        if compare:
            cells += [f"{number(r.paper_M_A, 1)} ({integer(r.paper_ETT_M)})", signed(r.diff_M_A)]
        cells += [mean_std(r.G_A_mean, r.G_A_std), number(r.ETT_G_mean, 1)]
        if compare:
            cells += [f"{number(r.paper_G_A, 1)} ({integer(r.paper_ETT_G)})", signed(r.diff_G_A)]
        detail.append(cells)
    text = [
        f"## {TITLES['table2']} ({dataset})",
        "",
        _runs_sentence(frame),
        _paper_note(ref, dataset, "table2"),
        "",
        "Ours (mean over seeds): accuracy % (mean ETT, epochs).",
        "",
        md_table(["w", *(f"{row} {m}" for row in rows for m in ("M_A", "G_A"))], grid),
        "",
        "Per configuration (Δ = ours - paper; the paper's FFF has leaf width 32):",
        "",
        md_table(headers, detail),
    ]
    labels = [f"{r.row}, w={integer(r.training_width)}" for r in frame.itertuples()]
    return Table(
        f"table2_{dataset}", "table2", dataset, frame, "\n".join(text), labels, ref.label, ref.same
    )


# ------------------------------------------------------------------------------------ Table 3
def table3(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Table 3 on ``dataset``: FF and FFF (per leaf width and h) inside a ViT: depth, inference
    width and size, speedup at the FF layers (``bench_vit.csv``, part=layers), G_A, and the share
    of the FF's G_A kept."""
    keys = [
        "model",
        "layer",
        "leaf_width",
        "depth",
        "training_width",
        "inference_width",
        "inference_size",
        "hardening",
    ]
    agg = _sorted(aggregate(runs, keys), _leaf_order)
    agg["row"] = [
        f"FF {integer(r.training_width)}"
        if r.layer == "ff"
        else f"{LAYER_NAMES.get(r.layer, r.layer)} {integer(r.training_width)}"
        if r.layer != "fff"
        else f"l={integer(r.leaf_width)}"
        for r in agg.itertuples()
    ]
    selection = bench_rows.select(bench, "vit", part="layers")
    measured = not selection.rows.empty
    speed = bench_rows.speedups(selection, ["training_width", "leaf_width"]) if measured else None
    ref = paper.reference("table3", dataset)
    theirs = {_key(r.leaf_width): r for r in paper.numbers("table3", ref).itertuples()}
    paper_ff = theirs.get(None)
    ff_rows = agg[agg["layer"] == "ff"]
    records = []
    for r in agg.itertuples():
        tw, leaf = _key(r.training_width), _key(r.leaf_width)
        if r.layer == "ff":
            speedup = 1.0 if measured else math.nan
        elif r.layer == "fff" and measured:
            speedup = float(speed.get((tw, leaf), math.nan))
        else:
            speedup = math.nan
        ff = ff_rows[ff_rows["training_width"] == r.training_width]
        ff_ga = ff["G_A_mean"].iloc[0] if len(ff) else math.nan
        p = theirs.get(leaf) if r.layer in ("ff", "fff") else None
        records.append(
            {
                **r._asdict(),
                "dataset": dataset,
                "kept_pct": 100.0 * r.G_A_mean / ff_ga if ff_ga == ff_ga and ff_ga else math.nan,
                "speedup": speedup,
                "paper_dataset": ref.dataset or "",
                "paper_speedup": p.speedup if p is not None else math.nan,
                "paper_G_A": p.G_A if p is not None else math.nan,
                "paper_kept_pct": 100.0 * p.G_A / paper_ff.G_A
                if p is not None and paper_ff is not None
                else math.nan,
            }
        )
    frame = pd.DataFrame(records)
    frame["diff_G_A"] = [_diff(a, b) for a, b in zip(frame.G_A_mean, frame.paper_G_A, strict=True)]
    frame = _finish(
        frame,
        [
            "dataset",
            "row",
            "model",
            "layer",
            "leaf_width",
            "depth",
            "training_width",
            "inference_width",
            "inference_size",
            "hardening",
            "n_runs",
            "seeds",
            "G_A_mean",
            "G_A_std",
            "M_A_mean",
            "M_A_std",
            "ETT_G_mean",
            "kept_pct",
            "speedup",
            "paper_dataset",
            "paper_speedup",
            "paper_G_A",
            "paper_kept_pct",
            "diff_G_A",
        ],
    )
    compare = ref.dataset is not None
    headers = ["model", "d", "inference width", "inference size", "h", "n", "speedup"]
    headers += [f"speedup {ref.label}"] if compare else []
    headers += ["G_A"] + ([f"G_A {ref.label}", "Δ G_A"] if compare else [])
    headers += ["G_A kept (% of FF)"] + ([f"kept {ref.label}"] if compare else [])
    headers += ["M_A", "ETT_G"]
    detail = []
    for r in frame.itertuples():
        cells = [
            r.row,
            integer(r.depth),
            integer(r.inference_width),
            integer(r.inference_size),
            hardening(r.hardening),
            str(r.n_runs),
            number(r.speedup) if measured else NOT_MEASURED,
        ]
        cells += [number(r.paper_speedup)] if compare else []
        cells.append(mean_std(r.G_A_mean, r.G_A_std))
        cells += [number(r.paper_G_A, 1), signed(r.diff_G_A)] if compare else []
        cells.append(number(r.kept_pct, 1))
        cells += [number(r.paper_kept_pct, 1)] if compare else []
        cells += [mean_std(r.M_A_mean, r.M_A_std), number(r.ETT_G_mean, 1)]
        detail.append(cells)
    models = ", ".join(sorted({m for m in frame["model"] if m})) or DASH
    text = [
        f"## {TITLES['table3']} ({dataset})",
        "",
        f"Model: {models}. " + _runs_sentence(frame),
        _paper_note(ref, dataset, "table3"),
        selection.note + "." if measured else "Speedup: not measured (no bench_vit.csv given).",
        "h: the FFF's hardening weight (inf: frozen tree). G_A kept: G_A as % of the FF's G_A "
        "(the paper's 94.2% at l = 1).",
        "",
        md_table(headers, detail),
    ]
    labels = [
        f"{r.row}" + (f", h={hardening(r.hardening)}" if r.layer == "fff" else "")
        for r in frame.itertuples()
    ]
    return Table(
        f"table3_{dataset}", "table3", dataset, frame, "\n".join(text), labels, ref.label, ref.same
    )


# ----------------------------------------------------------------------------------- Figure 2
def fig2(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
    """Figure 2's numbers on ``dataset``: FFF (leaf width l, depth d) and FF of width l + d, at
    equal inference size: M_A and G_A (the paper gives only the plot)."""
    keys = ["layer", "leaf_width", "depth", "training_width", "inference_size", "hardening"]
    agg = aggregate(runs, keys)
    agg = _sorted(
        agg,
        lambda r: (
            _key(r["inference_size"]) or 0,
            r["layer"] != "ff",
            _key(r["depth"]) or 0,
            _key(r["leaf_width"]) or 0,
        ),
    )
    agg["row"] = [
        f"FF {integer(r.training_width)}"
        if r.layer == "ff"
        else f"FFF l={integer(r.leaf_width)}, d={integer(r.depth)}"
        for r in agg.itertuples()
    ]
    agg["dataset"] = dataset
    frame = _finish(
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
            number(r.ETT_M_mean, 1),
            number(r.ETT_G_mean, 1),
        ]
        for r in frame.itertuples()
    ]
    text = [
        f"## {TITLES['fig2']} ({dataset})",
        "",
        _runs_sentence(frame),
        "The paper shows this comparison only as a plot (no numbers): the FFF leads clearly on "
        "M_A; on G_A it leads early, then both plateau.",
        "",
        md_table(
            ["inference size", "model", "training width", "n", "M_A", "G_A", "ETT_M", "ETT_G"],
            rows,
        ),
    ]
    labels = [f"{r.row}" for r in frame.itertuples()]
    return Table(f"fig2_{dataset}", "fig2", dataset, frame, "\n".join(text), labels)


# ---------------------------------------------------------------------------- Figures 3-4 speed
def speed(bench: pd.DataFrame) -> Table | None:
    """The largest FF/FFF and MoE/FFF time ratios of ``bench_paper_fig3.csv`` per device, dtype
    and batch size, beside the paper's 220x and 6x; None without such rows."""
    if bench.empty or "mode" not in bench:
        return None
    rows = bench[(bench["mode"] == "paper_fig3") & bench["check"].isin(bench_rows.GOOD_CHECKS)]
    if rows.empty:
        return None
    claims = paper.load("speed").set_index("ratio")
    records = []
    for (device, dtype, batch), group in rows.groupby(["device", "dtype", "batch"], sort=True):
        record: dict[str, Any] = {
            "device": device,
            "dtype": dtype,
            "batch": int(batch),
            "min_depth": int(group["depth"].min()),
            "max_depth": int(group["depth"].max()),
        }
        for ratio, name in (("FF/FFF", "FF_over_FFF"), ("MoE/FFF", "MoE_over_FFF")):
            values = pd.to_numeric(group[ratio], errors="coerce") if ratio in group else None
            if values is None or values.isna().all():
                record[f"max_{name}"], record[f"at_training_width_{name}"] = math.nan, math.nan
            else:
                best = values.idxmax()
                record[f"max_{name}"] = float(values[best])
                record[f"at_training_width_{name}"] = float(group.loc[best, "training_width"])
            record[f"paper_max_{name}"] = float(claims.loc[ratio, "value"])
        record["bench_source"] = ", ".join(sorted(set(group["bench_source"])))
        records.append(record)
    frame = _finish(pd.DataFrame(records), list(records[0]))
    setting = claims.iloc[0]
    headers = [
        "device",
        "dtype",
        "batch",
        "depths",
        "max FF/FFF (at w)",
        "paper",
        "max MoE/FFF (at w)",
        "paper",
    ]
    cells = [
        [
            r.device,
            r.dtype,
            str(r.batch),
            f"{r.min_depth}-{r.max_depth}",
            f"{number(r.max_FF_over_FFF, 1)} ({integer(r.at_training_width_FF_over_FFF)})",
            f"{number(r.paper_max_FF_over_FFF, 0)}",
            f"{number(r.max_MoE_over_FFF, 1)} ({integer(r.at_training_width_MoE_over_FFF)})",
            f"{number(r.paper_max_MoE_over_FFF, 0)}",
        ]
        for r in frame.itertuples()
    ]
    text = [
        f"## {TITLES['speed']}",
        "",
        f"From bench_paper_fig3.csv: a {setting['in_features']} -> {setting['out_features']} "
        f"layer, FFF leaf width {setting['leaf_width']} at depths d, FF of training width "
        f"w = {setting['leaf_width']} * 2^d, MoE of 2^d experts (k = 1). The paper's ratios: "
        f"depth {setting['min_depth']}-{setting['max_depth']}, batch {setting['batch']}, "
        f"{setting['hardware']}.",
        "",
        md_table(headers, cells),
    ]
    labels = [f"{r.device} {r.dtype} batch {r.batch}" for r in frame.itertuples()]
    return Table("speed", "speed", "", frame, "\n".join(text), labels, "paper", False)


# ------------------------------------------------------------------------------------ building
BUILDERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame, str], Table]] = {
    "table1": table1,
    "table2": table2,
    "table3": table3,
    "fig2": fig2,
}


def experiments(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """The distinct experiments among ``runs`` (task name, model, training protocol), each as a
    description and its number of runs."""
    counts = runs.groupby(["task_name", "model", "protocol"], sort=True).size()
    return [
        (f"task_name {t or DASH!r}, model {m or DASH}, {p or 'protocol unknown'}", int(n))
        for (t, m, p), n in counts.items()
    ]


def mixed(table: str, dataset: str, runs: pd.DataFrame) -> str | None:
    """A sentence naming the experiments when ``runs`` (one table, one dataset) mix several;
    None when they are one experiment."""
    found = experiments(runs)
    if len(found) <= 1:
        return None
    listed = "; ".join(f"{desc} ({n} runs)" for desc, n in found)
    return f"{table} on {dataset} mixes {len(found)} experiments ({listed})"


def build_tables(runs: pd.DataFrame, bench: pd.DataFrame, which: str = "all") -> Built:
    """Every table ``which`` asks for (``all``: every table the runs allow).

    Raises:
        ReportError: ``which`` names one table and its runs are missing or mix experiments
            (with ``all`` such a table is skipped with a note instead).
    """
    if which not in CHOICES:
        raise ReportError(f"--table {which}: choose one of {', '.join(CHOICES)}")
    finished = runs[runs["status"] == FINISHED]
    tables: list[Table] = []
    notes: list[str] = []
    wanted = TABLES if which == "all" else tuple(t for t in TABLES if t == which)
    for table in wanted:
        sub = finished[finished["table"] == table]
        if table in LAYERS:
            sub = sub[sub["layer"].isin(LAYERS[table])]
        if sub.empty:
            if which == table:
                found = sorted({t for t in finished["table"] if t}) or ["none"]
                raise ReportError(
                    f"--table {table}: no finished runs of {table} in the sources (a run belongs "
                    f"to a table by a tag or task_name starting with {table}; tables found: "
                    f"{', '.join(found)})"
                )
            continue
        for dataset in sorted(set(sub["dataset"])):
            part = sub[sub["dataset"] == dataset]
            problem = mixed(table, dataset, part)
            if problem and which == table:
                raise ReportError(
                    f"--table {table}: {problem}; a table averages the runs of one experiment: "
                    "give one experiment's run folders (e.g. one sweep's folder) as sources"
                )
            if problem:
                notes.append(f"Skipped: {problem}. Report them one experiment at a time.")
                continue
            tables.append(BUILDERS[table](part, bench, dataset))
    if which in ("speed", "all"):
        built = speed(bench)
        if built is not None:
            tables.append(built)
        elif which == "speed":
            raise ReportError(
                "--table speed needs benchmark rows of mode paper_fig3 (bench_paper_fig3.csv, "
                "from python -m fastff.bench mode=paper_fig3); the sources have none"
            )
    return Built(tables, notes)
