"""The layout of a run's results, without torch: training writes it (metrics.json and the W&B
summary), the report reads it (:mod:`fastff.report`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA_VERSION = 3
"""Version of metrics.json's layout (1: before ``schema_version`` existed; 2: without the
:data:`IDENTITY_KEYS`)."""

IDENTITY_KEYS = ("experiment", "data_config", "hardening", "frozen_tree", "gating")
"""What a run is, recorded when it starts so the report never works it out from config names:
the paper experiment it belongs to (:data:`TABLES`, or null), the name of its data config
(``conf/data/<name>.yaml``), the FFF's h and whether its tree is frozen (null for other kinds),
the MoE's gating (``noisy`` / ``noiseless``; null for other kinds). The layer kind (``layer``),
widths, ``leaf_width`` / ``depth`` and ``num_experts`` / ``k`` come from the built layer."""

RESULT_KEYS = (
    "dataset",
    "model",
    "layer",
    "width",
    "leaf_width",
    "depth",
    "seed",
    "training_width",
    "inference_width",
    "inference_size",
    "n_params",
    "M_A",
    "G_A",
    "ETT_M",
    "ETT_G",
    "wall_time_s",
    "status",
    *IDENTITY_KEYS,
)
"""The result keys of metrics.json that also go into the W&B summary."""

TABLES = ("table1", "table2", "table3", "fig2")
"""The experiments a run can belong to; a run belongs to the first of its ``task_name`` and tags
that starts with one of them (``table3_mnist5k`` is Table 3)."""


def as_tags(tags: Any) -> list[str]:
    """Tags as a list of strings; a string like ``"[table1,sweep_x]"`` is split."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t.strip().strip("'\"") for t in tags.strip("[]").split(",") if t.strip()]
    if isinstance(tags, Iterable):
        return [str(t) for t in tags]
    return [str(tags)]


def experiment_of(task_name: str | None, tags: Any) -> str:
    """The experiment a run belongs to: the first of its task_name and tags that starts with a
    name in :data:`TABLES`; empty when none does."""
    for candidate in [task_name or "", *as_tags(tags)]:
        for table in TABLES:
            if candidate.startswith(table):
                return table
    return ""


def config_name(group: str, node: Any) -> str | None:
    """The name of the config of ``group`` (``data``, ``layer``) whose ``_target_`` the config
    ``node`` has: the one ``conf/<group>/<name>.yaml`` (or registered layer kind) with that
    target; None when no config or several have it."""
    if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
        return None
    from fastff.registry import kinds

    names = [name for name, target in kinds(group).items() if target == node["_target_"]]
    return names[0] if len(set(names)) == 1 else None
