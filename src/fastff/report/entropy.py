"""Mean node entropy per tree level over epochs (the paper's Figures 5-6), from the runs'
histories.

A history entry holds ``entropy/<layer>/level_<m>``: the epoch's batch-mean Bernoulli entropy
(nats, at most ln 2) of the nodes of tree level m of one hosted FFF. A configuration's curve for
level m averages these over the hosted layers, then over the configuration's finished runs
(seeds) that reached that epoch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fastff.report.format import hardening, integer
from fastff.report.rows import FINISHED

ENTROPY_KEY = re.compile(r"^(?:train/)?entropy/(?P<layer>.+)/level_(?P<level>\d+)$")
CONFIG_KEYS = ["table", "dataset", "model", "leaf_width", "depth", "training_width", "hardening"]
"""What makes a configuration (one panel of the figure)."""


def level_means(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per epoch and tree level: the mean over hosted layers (columns epoch, level, entropy)."""
    records = []
    for entry in history:
        epoch = entry.get("epoch")
        levels: dict[int, list[float]] = {}
        for key, value in entry.items():
            match = ENTROPY_KEY.match(str(key))
            if match and value is not None and not math.isnan(float(value)):
                levels.setdefault(int(match["level"]), []).append(float(value))
        for level, values in levels.items():
            records.append(
                {"epoch": int(epoch), "level": level, "entropy": sum(values) / len(values)}
            )
    return pd.DataFrame(records, columns=["epoch", "level", "entropy"])


def curves(
    runs: pd.DataFrame, histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> pd.DataFrame:
    """Entropy curves of every FFF configuration among the finished ``runs`` with a history:
    columns ``CONFIG_KEYS``, ``config`` (a label), ``epoch``, ``level``, ``entropy`` (mean over
    layers and runs) and ``n_runs`` (runs averaged at that epoch)."""
    parts = []
    fff = runs[(runs["status"] == FINISHED) & (runs["layer"] == "fff")]
    for run in fff.itertuples():
        history = histories.get(run.run_id)
        if not history:
            continue
        means = level_means(history)
        if means.empty:
            continue
        for key in CONFIG_KEYS:
            means[key] = getattr(run, key)
        means["run_id"] = run.run_id
        parts.append(means)
    columns = [*CONFIG_KEYS, "config", "epoch", "level", "entropy", "n_runs"]
    if not parts:
        return pd.DataFrame(columns=columns)
    data = pd.concat(parts, ignore_index=True)
    grouped = data.groupby([*CONFIG_KEYS, "epoch", "level"], dropna=False, sort=True)
    out = grouped.agg(entropy=("entropy", "mean"), n_runs=("run_id", "nunique")).reset_index()
    out["config"] = [config_label(r) for r in out.itertuples()]
    # panels in the tables' order: leaf width descending, then training width, then h
    order = sorted(
        range(len(out)),
        key=lambda i: (
            str(out["table"].iat[i]),
            str(out["dataset"].iat[i]),
            -_number(out["leaf_width"].iat[i]),
            _number(out["training_width"].iat[i]),
            _number(out["hardening"].iat[i]),
            _number(out["depth"].iat[i]),
            int(out["epoch"].iat[i]),
            int(out["level"].iat[i]),
        ),
    )
    return out.iloc[order].loc[:, columns].reset_index(drop=True)


def _number(value: Any) -> float:
    """A sortable number (missing: -1)."""
    return -1.0 if value is None or value is pd.NA or value != value else float(value)


def config_label(row: Any) -> str:
    """A configuration's panel title, e.g. ``FFF l=8, d=4 (w=128, h=5)``."""
    label = f"FFF l={integer(row.leaf_width)}, d={integer(row.depth)}"
    label += f" (w={integer(row.training_width)}, h={hardening(row.hardening)})"
    return label if not row.model or row.model == "flat" else f"{row.model}: {label}"
