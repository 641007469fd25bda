"""Cells and markdown tables: how numbers are printed in the report (deterministic, so the same
results always give the same bytes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NOT_MEASURED = "not measured"
DASH = "-"


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pd.NA (NA != NA is NA, truthy check raises)
    except TypeError:
        return True


def number(value: Any, decimals: int = 2) -> str:
    """``value`` with ``decimals`` decimals; ``-`` when missing; ``inf`` as is."""
    if missing(value):
        return DASH
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def integer(value: Any) -> str:
    """An integer cell (``-`` when missing)."""
    return DASH if missing(value) else str(int(value))


def mean_std(mean: Any, std: Any, decimals: int = 2) -> str:
    """``mean ± std``; just the mean when there is no spread (one seed)."""
    if missing(mean):
        return DASH
    if missing(std):
        return number(mean, decimals)
    return f"{number(mean, decimals)} ± {number(std, decimals)}"


def signed(value: Any, decimals: int = 2) -> str:
    """A difference with its sign (``+1.20``, ``-0.35``)."""
    if missing(value):
        return DASH
    return f"{float(value):+.{decimals}f}"


def hardening(value: Any) -> str:
    """The FFF's h: ``inf`` for a frozen tree, ``-`` for other layers."""
    if missing(value):
        return DASH
    value = float(value)
    return "inf" if math.isinf(value) else f"{value:g}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (``|`` in cells escaped), without a final newline."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(headers), "|" + "|".join("---" for _ in headers) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)
