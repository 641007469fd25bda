"""Benchmark rows (``bench_<mode>.csv`` of ``python -m fastff.bench``) and which of them give a
table's speedup column.

A benchmark CSV has one row per case: ``mode``, ``device``, ``dtype``, ``batch``, the sizes
(``leaf_width``, ``depth``, ``training_width``; ``part`` in the vit mode), the times ``t_<impl>_ms``
and the ratios ``FF/FFF`` and ``MoE/FFF``. One benchmark may hold several devices, dtypes and
batch sizes; a table takes one of them (:func:`select`), preferring the paper's batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

TEXT_COLUMNS = ("bench_source", "mode", "device", "dtype", "part", "check", "fff_strategy")
"""Columns kept as text; every other column that parses as numbers becomes numeric."""
KEY_COLUMNS = ("device", "dtype", "batch")
PAPER_BATCH = {"table1": 2048, "vit": 256, "paper_fig3": 256}
"""The batch size the paper timed each benchmark mode at."""
GOOD_CHECKS = ("ok", "not checked", "")


def normalize_bench(frame: pd.DataFrame) -> pd.DataFrame:
    """Benchmark rows with fixed types: text columns as strings ("" for missing), the rest numeric
    where every non-empty cell is a number; rows in a fixed order (source, mode, device, dtype,
    part, batch, training width, leaf width)."""
    frame = frame.copy().reset_index(drop=True)
    for column in ("bench_source", "mode", "device", "dtype", "part", "check"):
        if column not in frame:
            frame[column] = ""
    for column in frame.columns:
        values = frame[column]
        if column in TEXT_COLUMNS or column == "notes":
            frame[column] = [_text(v) for v in values]
            continue
        numbers = pd.to_numeric(values.map(_blank_to_none), errors="coerce")
        text = values.map(_text)
        if bool((numbers.notna() | (text == "")).all()):
            frame[column] = numbers.astype("float64")
        else:
            frame[column] = list(text)
    order = [
        c
        for c in (
            "bench_source",
            "mode",
            "device",
            "dtype",
            "part",
            "batch",
            "training_width",
            "leaf_width",
        )
        if c in frame
    ]
    return frame.sort_values(order, kind="stable").reset_index(drop=True) if len(frame) else frame


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and value == "" else value


def _text(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


@dataclass
class Selection:
    """The benchmark rows one table uses, and a sentence saying which they are."""

    rows: pd.DataFrame
    note: str


def select(bench: pd.DataFrame, mode: str, part: str | None = None) -> Selection:
    """The rows of ``mode`` (and ``part``) with a FF/FFF ratio and a passed correctness check, of
    one device, dtype and batch size: the paper's batch size first, then float32, then CUDA (the
    paper timed on a GPU), then the smallest batch."""
    if bench.empty or "mode" not in bench:
        return Selection(bench.iloc[0:0], "")
    rows = bench[bench["mode"] == mode]
    if part is not None:
        rows = rows[rows["part"] == part]
    if "FF/FFF" in rows:
        rows = rows[pd.to_numeric(rows["FF/FFF"], errors="coerce").notna()]
    rows = rows[rows["check"].isin(GOOD_CHECKS)]
    if rows.empty or "batch" not in rows:
        return Selection(rows.iloc[0:0], "")
    paper_batch = PAPER_BATCH.get(mode)
    keys = sorted(
        {tuple(k) for k in rows[list(KEY_COLUMNS)].itertuples(index=False)},
        key=lambda k: (k[2] != paper_batch, k[1] != "float32", k[0] != "cuda", k[2], k[0], k[1]),
    )
    device, dtype, batch = keys[0]
    chosen = rows[(rows["device"] == device) & (rows["dtype"] == dtype) & (rows["batch"] == batch)]
    sources = ", ".join(sorted(set(chosen["bench_source"])))
    where = f"{device}, {dtype}, batch {batch:g}" + (f", part={part}" if part else "")
    note = f"speedup = FF/FFF inference time from bench_{mode}.csv ({where}; {sources})"
    if len(keys) > 1:
        note += f"; {len(keys) - 1} other device/dtype/batch setting(s) in the benchmark not used"
    return Selection(chosen, note)


def speedups(selection: Selection, keys: list[str]) -> dict[tuple, float]:
    """FF/FFF by the values of ``keys`` (e.g. training width and leaf width; whole numbers as
    ints): the median where a setting was timed more than once."""
    if selection.rows.empty:
        return {}
    rows = selection.rows.copy()
    rows["FF/FFF"] = pd.to_numeric(rows["FF/FFF"], errors="coerce")
    medians = rows.groupby(keys)["FF/FFF"].median()
    out = {}
    for index, value in medians.items():
        values = index if isinstance(index, tuple) else (index,)
        out[tuple(_whole(v) for v in values)] = float(value)
    return out


def _whole(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value
