"""Flags that say a finished run's numbers need care: it hit its epoch cap, or its tree collapsed.

- ``capped``: the run trained for ``trainer.max_epochs`` epochs. fastff's early stop ends a run
  once neither the training-split nor the validation accuracy improved for ``patience`` epochs,
  so a run that reached the cap was still improving: its M_A, G_A and ETT are lower bounds of
  what longer training gives.
- ``collapsed``: in the last epoch, an FFF's hard routing sent at least ``COLLAPSE_SHARE`` of the
  training inputs to one leaf (with at least 4 leaves), or at least ``DEAD_SHARE`` of the units of
  the leaves it reached never fired (``fastff.training.routing_stats``). Runs recorded before
  those statistics existed are never flagged ``collapsed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLLAPSE_SHARE = 0.5
DEAD_SHARE = 0.5
MIN_LEAVES = 4
CAPPED, COLLAPSED = "capped", "collapsed"
SEPARATOR = ";"


def _max_epochs(config: Mapping[str, Any]) -> int | None:
    trainer = config.get("trainer") if isinstance(config, Mapping) else None
    value = trainer.get("max_epochs") if isinstance(trainer, Mapping) else None
    return value if isinstance(value, int) and value > 0 else None


def _collapsed(last_epoch: Mapping[str, Any], depth: Any) -> bool:
    if not isinstance(depth, int) or 2**depth < MIN_LEAVES:
        return False
    for key, value in last_epoch.items():
        if not (key.startswith("routing/") and isinstance(value, int | float)):
            continue
        if key.endswith("/top_leaf_share") and value >= COLLAPSE_SHARE:
            return True
        if key.endswith("/dead_units") and value >= DEAD_SHARE:
            return True
    return False


def run_flags(metrics: Mapping[str, Any]) -> str:
    """The flags of a run's metrics.json as ``"capped;collapsed"`` (sorted; "" for none)."""
    flags = []
    epochs, cap = metrics.get("epochs"), _max_epochs(metrics.get("config") or {})
    if isinstance(epochs, int) and cap is not None and epochs >= cap:
        flags.append(CAPPED)
    history = metrics.get("history")
    last = history[-1] if isinstance(history, list) and history else None
    if isinstance(last, Mapping) and _collapsed(last, metrics.get("depth")):
        flags.append(COLLAPSED)
    return SEPARATOR.join(flags)


def has_flag(flags: Any, flag: str) -> bool:
    """Whether a ``flags`` cell (a string as :func:`run_flags` writes it) holds ``flag``."""
    return isinstance(flags, str) and flag in flags.split(SEPARATOR)
