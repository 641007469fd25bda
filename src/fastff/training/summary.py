"""The short table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

SHOWN = (
    "dataset",
    "layer",
    "width",
    "leaf_width",
    "depth",
    "inference_width",
    "n_params",
    "M_A",
    "ETT_M",
    "G_A",
    "ETT_G",
    "test_acc_soft",
    "wall_time_s",
    "status",
)


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    """Print the headline results (accuracies in percent, hard inference) as a table."""
    table = Table(title="fastff run", show_header=True)
    table.add_column("key")
    table.add_column("value", justify="right")
    for key in SHOWN:
        if results.get(key) is not None:
            table.add_row(key, str(results[key]))
    (console or Console()).print(table)
