"""The report's figures (matplotlib, no pyplot state): each function returns a
:class:`matplotlib.figure.Figure` (tests read its lines); :func:`save` writes it as PNG.

- :func:`table1_figure`: M_A and G_A vs training width per leaf width, with the FF line (Table 1).
- :func:`fig2_figure`: FFF vs FF at equal inference size (Figure 2).
- :func:`runs_figure`: M_A and G_A vs training width of runs that belong to no paper table.
- :func:`speed_figure`: inference time of FF, MoE and FFF vs training width, one panel per batch
  size (Figures 3-4).
- :func:`entropy_figure`: mean node entropy per tree level over epochs (Figures 5-6).

Lines carry readable labels (``FF``, ``l=8``, ``level 0``); the paper's values, where drawn, are
dotted lines labelled ``_paper ...`` (kept out of the legend, which has one entry for them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

LN2 = math.log(2.0)
HARD_ENOUGH = 0.10
"""The paper's rule of thumb: below about 0.10 nats, rounding the node decisions costs little."""
METRIC_NAMES = {
    "M_A": "M_A: memorization accuracy (train, %)",
    "G_A": "G_A: generalization accuracy (test, %)",
}


def _figure(ncols: int, nrows: int = 1, width: float = 5.2, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width * ncols, height * nrows), layout="constrained")


def save(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG (folders created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _log2_axis(axis: Axes, values: list[float]) -> None:
    """A log2 x axis ticked at the data's values (at most 8 labels; 2^k beyond 10,000)."""
    axis.set_xscale("log", base=2)
    ticks = sorted({float(v) for v in values if v == v and v > 0})
    ticks = ticks[:: max(1, math.ceil(len(ticks) / 8))]
    axis.set_xticks(ticks, [_tick_label(t) for t in ticks])
    axis.minorticks_off()


def _tick_label(value: float) -> str:
    power = math.log2(value)
    if value >= 10_000 and power.is_integer():
        return f"2^{int(power)}"
    return f"{value:g}"


def _plain_log_ticks(axis: Axes) -> None:
    """Plain numbers (0.5, 2, 40) on a log y axis instead of powers of ten."""
    from matplotlib.ticker import LogFormatter

    axis.yaxis.set_major_formatter(LogFormatter())
    axis.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axis.tick_params(axis="y", which="minor", labelsize=7)


def _errorline(axis: Axes, x: pd.Series, mean: pd.Series, std: pd.Series, **style) -> Line2D:
    """The mean as a line with markers (labelled by ``style``), std as error bars; returns the
    line."""
    (line,) = axis.plot(x, mean, marker="o", **style)
    if std.notna().any():
        axis.errorbar(x, mean, yerr=std.fillna(0.0), fmt="none", ecolor=line.get_color(), capsize=3)
    return line


def table1_figure(frame: pd.DataFrame, paper_label: str = "") -> Figure:
    """Table 1's view of one dataset: M_A and G_A (mean, error bars = std over seeds) vs training
    width, one line per leaf width and the FF line; the paper's values dotted when given.

    Args:
        frame: a Table 1 frame (:func:`fastff.report.tables.table1`).
        paper_label: the paper column's label ("" for none).
    """
    figure = _figure(2)
    dataset = frame["dataset"].iloc[0] if len(frame) else ""
    for axis, metric in zip(figure.subplots(1, 2), ("M_A", "G_A"), strict=True):
        for row, group in frame.groupby("row", sort=False):
            group = group.sort_values("training_width")
            x = group["training_width"].astype(float)
            style = {"color": "black", "linewidth": 2.2} if row == "FF" else {}
            line = _errorline(
                axis, x, group[f"{metric}_mean"], group[f"{metric}_std"], label=row, **style
            )
            paper = group[f"paper_{metric}"]
            if paper_label and paper.notna().any():
                axis.plot(x, paper, linestyle=":", color=line.get_color(), label=f"_paper {row}")
        if paper_label:
            axis.plot([], [], linestyle=":", color="grey", label=f"{paper_label} (dotted)")
        _log2_axis(axis, list(frame["training_width"].astype(float)))
        axis.set_xlabel("training width w (neurons)")
        axis.set_ylabel(METRIC_NAMES[metric])
        axis.set_title(f"{metric} on {dataset}: FF vs FFF per leaf width l")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, title="error bars: std over seeds", title_fontsize=7)
    return figure


def runs_figure(frame: pd.DataFrame) -> Figure:
    """Runs of no paper table on one dataset: M_A and G_A (mean, error bars = std over seeds) vs
    training width, one line per row of the table (a combination of the settings that vary).

    Args:
        frame: a runs frame (:func:`fastff.report.tables.by_width.build`).
    """
    figure = _figure(2)
    dataset = frame["dataset"].iloc[0] if len(frame) else ""
    for axis, metric in zip(figure.subplots(1, 2), ("M_A", "G_A"), strict=True):
        for row, group in frame.groupby("row", sort=False):
            group = group.sort_values("training_width")
            x = group["training_width"].astype(float)
            _errorline(axis, x, group[f"{metric}_mean"], group[f"{metric}_std"], label=row)
        _log2_axis(axis, list(frame["training_width"].astype(float)))
        axis.set_xlabel("training width w (neurons)")
        axis.set_ylabel(METRIC_NAMES[metric])
        axis.set_title(f"{metric} on {dataset}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, title="error bars: std over seeds", title_fontsize=7)
    return figure


def fig2_figure(frame: pd.DataFrame) -> Figure:
    """Figure 2's view of one dataset: M_A and G_A vs inference size for the FF (width l + d)
    and the FFF per depth d (points labelled by leaf width)."""
    figure = _figure(2)
    dataset = frame["dataset"].iloc[0] if len(frame) else ""
    lines = []
    ff = frame[frame["layer"] == "ff"]
    if len(ff):
        lines.append(("FF (width = inference size)", ff, {"color": "black", "linewidth": 2.2}))
    fff = frame[frame["layer"] == "fff"]
    for depth, group in fff.groupby("depth", sort=True):
        lines.append((f"FFF d={int(depth)}", group, {}))
    for axis, metric in zip(figure.subplots(1, 2), ("M_A", "G_A"), strict=True):
        for label, group, style in lines:
            group = group.sort_values("inference_size")
            x = group["inference_size"].astype(float)
            _errorline(
                axis, x, group[f"{metric}_mean"], group[f"{metric}_std"], label=label, **style
            )
        _log2_axis(axis, list(frame["inference_size"].astype(float)))
        axis.set_xlabel("inference size (neurons used per input: FF width, FFF d + l)")
        axis.set_ylabel(METRIC_NAMES[metric])
        axis.set_title(f"{metric} on {dataset} at equal inference size")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, title="error bars: std over seeds", title_fontsize=7)
    return figure


TIME_LINES = (("t_FF_ms", "FF"), ("t_MoE_ms", "MoE (k = 1)"), ("t_FFF_ms", "FFF"))


def speed_figure(rows: pd.DataFrame, paper_ratios: dict[str, float] | None = None) -> Figure:
    """Figures 3-4: median time per call of FF, MoE and FFF vs training width (log-log), one
    panel per batch size; ``rows`` are ``bench_paper_fig3.csv`` rows of one device and dtype."""
    batches = sorted(set(rows["batch"]))
    figure = _figure(len(batches))
    axes = figure.subplots(1, len(batches), squeeze=False)[0]
    device, dtype = rows["device"].iloc[0], rows["dtype"].iloc[0]
    for axis, batch in zip(axes, batches, strict=True):
        group = rows[rows["batch"] == batch].sort_values("training_width")
        x = group["training_width"].astype(float)
        for column, label in TIME_LINES:
            if column in group and pd.to_numeric(group[column], errors="coerce").notna().any():
                axis.plot(x, pd.to_numeric(group[column], errors="coerce"), marker="o", label=label)
        _log2_axis(axis, list(x))
        axis.set_yscale("log")
        _plain_log_ticks(axis)
        axis.set_xlabel("training width w = 32 * 2^d (FFF leaf width 32, depth d)")
        axis.set_ylabel("median time per forward call (ms)")
        title = f"batch {int(batch)} ({device}, {dtype})"
        ratios = []
        for ratio in ("FF/FFF", "MoE/FFF"):
            if ratio in group and pd.to_numeric(group[ratio], errors="coerce").notna().any():
                best = pd.to_numeric(group[ratio], errors="coerce").max()
                claim = (paper_ratios or {}).get(ratio)
                ratios.append(
                    f"max {ratio} {best:.1f}x" + (f" (paper {claim:g}x)" if claim else "")
                )
        axis.set_title(title + ("\n" + ", ".join(ratios) if ratios else ""), fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    return figure


def entropy_figure(curves: pd.DataFrame, title: str) -> Figure:
    """Figures 5-6: one panel per FFF configuration, the mean node entropy (nats) of each tree
    level over epochs (averaged over hosted layers and seeds, up to the last epoch that every run
    of the configuration reached); ``curves`` from :func:`fastff.report.entropy.curves` for one
    table and dataset."""
    configs = list(dict.fromkeys(curves["config"]))
    ncols = min(4, len(configs))
    nrows = math.ceil(len(configs) / ncols)
    figure = _figure(ncols, nrows, width=4.2, height=3.3)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for axis, config in zip(axes, configs, strict=False):
        part = curves[curves["config"] == config]
        n_runs = int(part["n_runs"].max())
        # only the epochs every run reached: a mean over fewer runs would jump where one stops
        part = part[part["n_runs"] == n_runs]
        depth = int(part["level"].max()) + 1
        for level, group in part.groupby("level", sort=True):
            group = group.sort_values("epoch")
            color = cmap(level / max(depth - 1, 1))
            axis.plot(group["epoch"], group["entropy"], color=color, label=f"level {level}")
        axis.axhline(HARD_ENOUGH, color="grey", linestyle="--", linewidth=0.8)
        axis.axhline(LN2, color="grey", linestyle=":", linewidth=0.8)
        axis.set_ylim(0.0, LN2 * 1.05)
        last = int(part["epoch"].max())
        axis.set_title(f"{config}\n{n_runs} run(s), epochs 1-{last} (all runs)", fontsize=8)
        axis.set_xlabel("epoch")
        axis.set_ylabel("mean node entropy (nats)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6, ncols=2 if depth > 4 else 1)
    for axis in axes[len(configs) :]:
        axis.set_visible(False)
    figure.suptitle(
        f"{title}: node entropy per tree level (level 0 = root; dashed: 0.10, below which "
        "rounding costs little; dotted: ln 2, undecided)",
        fontsize=9,
    )
    return figure
