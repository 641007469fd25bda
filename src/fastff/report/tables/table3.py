"""Table 3: FFF inside a vision transformer (inference size, speedup at the FF layers, G_A)."""

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
    LAYER_NAMES,
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


def build(runs: pd.DataFrame, bench: pd.DataFrame, dataset: str) -> Table:
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
    agg = sorted_rows(aggregate(runs, keys), leaf_order)
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
    theirs = {key_of(r.leaf_width): r for r in paper.numbers("table3", ref).itertuples()}
    paper_ff = theirs.get(None)
    ff_rows = agg[agg["layer"] == "ff"]
    records = []
    for r in agg.itertuples():
        tw, leaf = key_of(r.training_width), key_of(r.leaf_width)
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
    add_differences(frame, ("G_A",))
    frame = finish(
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
            *FLAG_COLUMNS,
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
        cells += [mean_std(r.M_A_mean, r.M_A_std), mean_std(r.ETT_G_mean, r.ETT_G_std, 1)]
        detail.append(cells)
    models = ", ".join(sorted({m for m in frame["model"] if m})) or DASH
    text = [
        f"## {TITLES['table3']} ({dataset})",
        "",
        f"Model: {models}. " + runs_sentence(frame),
        paper_note(ref, dataset, "table3"),
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
    flagged = flags_sentence(frame, labels)
    text += ["", flagged] if flagged else []
    return Table(
        f"table3_{dataset}", "table3", dataset, frame, "\n".join(text), labels, ref.label, ref.same
    )
