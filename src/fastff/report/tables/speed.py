"""Figures 3-4 as a table: the largest FF/FFF and MoE/FFF time ratios beside the paper's."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from fastff.report import bench as bench_rows
from fastff.report import paper
from fastff.report.format import integer, md_table, number
from fastff.report.tables.common import TITLES, Table, finish


def build(bench: pd.DataFrame) -> Table | None:
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
    frame = finish(pd.DataFrame(records), list(records[0]))
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
