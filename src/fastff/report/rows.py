"""A run as one row: its settings and results, whatever it came from (metrics.json, W&B, CSV).

The row's columns are ``RUN_COLUMNS`` (the columns of ``runs.csv``). :func:`normalize_runs` gives
every frame of rows the same column types, so the tables built from ``metrics.json`` files and from
the ``runs.csv`` written of them are the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from fastff.report.run_flags import run_flags

TABLES = ("table1", "table2", "table3", "fig2")
"""The experiments a run can belong to; a run belongs to the first of its ``task_name`` and tags
that starts with one of them (``table3_mnist5k`` is Table 3)."""

STRING_COLUMNS = (
    "run_id",
    "table",
    "task_name",
    "protocol",
    "dataset",
    "model",
    "layer",
    "gating",
    "status",
    "flags",
    "error",
    "git_commit",
)
INT_COLUMNS = (
    "width",
    "training_width",
    "leaf_width",
    "depth",
    "inference_width",
    "inference_size",
    "num_experts",
    "k",
    "seed",
    "ETT_M",
    "ETT_G",
    "epochs",
)
FLOAT_COLUMNS = ("hardening", "M_A", "G_A", "wall_time_s")
RUN_COLUMNS = (
    "run_id",
    "table",
    "dataset",
    "model",
    "layer",
    "width",
    "training_width",
    "leaf_width",
    "depth",
    "inference_width",
    "inference_size",
    "hardening",
    "num_experts",
    "k",
    "gating",
    "seed",
    "task_name",
    "protocol",
    "M_A",
    "G_A",
    "ETT_M",
    "ETT_G",
    "epochs",
    "wall_time_s",
    "status",
    "flags",
    "error",
    "git_commit",
)
"""The columns of ``runs.csv``: run id, settings, metrics, status, flags
(``fastff.report.run_flags``: ``capped``, ``collapsed``), git commit. ``hardening`` is
the FFF's h (``inf`` for a frozen tree, empty for FF and MoE); ``protocol`` sums up the training
settings (optimizer, batch size, epochs, patience) that must agree within one table."""

FINISHED = "finished"
STATUSES = (
    "finished",
    "failed",
    "interrupted",
    "diverged",
    "smoke_test",
    "running",
    "missing",
    "unreadable",
    "incomplete",
    "invalid",
)
"""metrics.json's statuses, then ``missing`` (a sweep trial without metrics.json),
``unreadable`` (a metrics.json that is not valid JSON), ``incomplete`` (one without a status) and
``invalid`` (one that says finished but whose M_A or G_A is no accuracy: Infinity, NaN, a string,
outside 0-100). Only ``finished`` runs are averaged."""

ACCURACIES = ("M_A", "G_A")
"""The results a finished run must hold as a number from 0 to 100 (or null: not measured)."""


def lookup(config: Mapping[str, Any], *path: str) -> Any:
    """``config[a][b]...``; also finds flattened keys (``"a.b"`` or ``"a/b"``, as W&B may store
    them). None when absent."""
    node: Any = config
    for i, key in enumerate(path):
        if not isinstance(node, Mapping):
            return None
        if key in node:
            node = node[key]
            continue
        rest = path[i:]
        for sep in (".", "/"):
            flat = sep.join(rest)
            if flat in node:
                return node[flat]
        return None
    return node


def as_tags(tags: Any) -> list[str]:
    """Tags as a list of strings; a string like ``"[table1,sweep_x]"`` is split."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t.strip().strip("'\"") for t in tags.strip("[]").split(",") if t.strip()]
    if isinstance(tags, Iterable):
        return [str(t) for t in tags]
    return [str(tags)]


def table_of(task_name: str | None, tags: Any) -> str:
    """The experiment a run belongs to: the first of its task_name and tags that starts with a
    name in ``TABLES``; empty when none does."""
    for candidate in [task_name or "", *as_tags(tags)]:
        for table in TABLES:
            if candidate.startswith(table):
                return table
    return ""


def _short_class(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else ""


def protocol_of(config: Mapping[str, Any]) -> str:
    """The training settings that make runs comparable, as one string, e.g.
    ``"Adam lr 0.01, batch 64, at most 40 epochs, patience 10"`` (empty without a config)."""
    parts = []
    optimizer = _short_class(lookup(config, "optimizer", "_target_"))
    if optimizer:
        parts.append(f"{optimizer} lr {lookup(config, 'optimizer', 'lr')}")
    scheduler = _short_class(lookup(config, "scheduler", "scheduler", "_target_"))
    if scheduler:
        patience = lookup(config, "scheduler", "scheduler", "patience")
        parts.append(f"{scheduler} on {lookup(config, 'scheduler', 'monitor')} ({patience})")
    batch = lookup(config, "data", "batch_size")
    if batch is not None:
        parts.append(f"batch {batch}")
    epochs = lookup(config, "trainer", "max_epochs")
    if epochs is not None:
        parts.append(f"at most {epochs} epochs")
    patience = lookup(config, "callbacks", "early_stopping", "patience")
    if patience is not None:
        parts.append(f"patience {patience}")
    return ", ".join(parts)


def _layer_from_target(layer_cfg: Mapping[str, Any]) -> str:
    name = _short_class(layer_cfg.get("_target_")).lower()
    return name if name in ("ff", "fff", "moe") else ""


def row_from_metrics(metrics: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """One row of ``RUN_COLUMNS`` from a run's metrics.json (or a W&B run turned into one)."""
    config = metrics.get("config") or {}
    layer_cfg = lookup(config, "layer") or {}
    if not isinstance(layer_cfg, Mapping):
        layer_cfg = {}
    task_name = str(lookup(config, "task_name") or "")
    layer = metrics.get("layer") or _layer_from_target(layer_cfg)
    hardening = None
    if layer == "fff":
        frozen = bool(layer_cfg.get("frozen_tree"))
        hardening = math.inf if frozen else layer_cfg.get("hardening")
    moe = layer == "moe"
    git = (metrics.get("provenance") or {}).get("git") or {}
    error = str(metrics.get("error") or "").splitlines()
    return {
        "run_id": run_id,
        "table": table_of(task_name, lookup(config, "tags")),
        "dataset": metrics.get("dataset") or _data_name(lookup(config, "data")),
        "model": metrics.get("model") or lookup(config, "model", "name"),
        "layer": layer,
        "width": metrics.get("width"),
        "training_width": metrics.get("training_width"),
        "leaf_width": metrics.get("leaf_width"),
        "depth": metrics.get("depth"),
        "inference_width": metrics.get("inference_width"),
        "inference_size": metrics.get("inference_size"),
        "hardening": hardening,
        "num_experts": metrics.get("num_experts", layer_cfg.get("num_experts")) if moe else None,
        "k": metrics.get("k", layer_cfg.get("k")) if moe else None,
        "gating": _gating(layer_cfg) if moe else "",
        "seed": metrics.get("seed", lookup(config, "seed")),
        "task_name": task_name,
        "protocol": protocol_of(config),
        "M_A": metrics.get("M_A"),
        "G_A": metrics.get("G_A"),
        "ETT_M": metrics.get("ETT_M"),
        "ETT_G": metrics.get("ETT_G"),
        "epochs": metrics.get("epochs"),
        "wall_time_s": metrics.get("wall_time_s"),
        "status": metrics.get("status") or "running",
        "flags": run_flags(metrics),
        "error": error[0] if error else "",
        "git_commit": git.get("commit") or "",
    } | _status_of(metrics)


def _status_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` and ``error`` overrides for a metrics.json without a (valid) status, or that
    says finished without valid accuracies; {} for the others."""
    status = metrics.get("status")
    if status is None or status == "":
        return {"status": "incomplete", "error": "metrics.json has no status"}
    if not isinstance(status, str):
        return {"status": "unreadable", "error": f"metrics.json's status is {status!r}"}
    if status != FINISHED:
        return {}
    for key in ACCURACIES:
        problem = _accuracy_problem(metrics.get(key))
        if problem:
            return {"status": "invalid", "error": f"finished, but {key} is {problem}"}
    return {}


def _accuracy_problem(value: Any) -> str | None:
    """Why ``value`` is no accuracy in percent, or None (None itself: not measured)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} ({type(value).__name__}), not a number"
    if math.isnan(value) or math.isinf(value):
        return f"{value}, not a finite number"
    if not 0 <= value <= 100:
        return f"{value}, outside 0-100"
    return None


def _gating(layer_cfg: Mapping[str, Any]) -> str:
    """An MoE's gating: ``noisy`` (Shazeer et al.'s, the default) or ``noiseless``."""
    return "noiseless" if layer_cfg.get("noisy_gating") is False else "noisy"


def _data_name(data_cfg: Any) -> str:
    """The dataset's config name (``mnist``) from a data config's ``_target_``, the name of the
    ``conf/data/*.yaml`` that uses it (used only when metrics.json has no ``dataset``: a run that
    failed before loading its data); a target no config uses gives its class name without
    ``DataModule``, lower case."""
    if not isinstance(data_cfg, Mapping):
        return str(data_cfg or "")
    from fastff.registry import kinds

    target = str(data_cfg.get("_target_") or "")
    names = [name for name, used in kinds("data").items() if used == target]
    if len(names) == 1:
        return names[0]
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower()


_VARIANT = re.compile(r"^(?P<layer>fff|ff|moe)(?:_l(?P<leaf>\d+))?(?:_d(?P<depth>\d+))?")


def row_from_trial(params: Mapping[str, Any], run_id: str, status: str) -> dict[str, Any]:
    """A row for a sweep trial that left no metrics.json, from its sweep parameters (what is
    known of its settings: dataset, layer, widths, seed, tags)."""
    variant = _VARIANT.match(str(params.get("variant") or ""))
    layer = params.get("layer") or (variant["layer"] if variant else "")
    width = params.get("layer.width")
    if variant and variant["layer"] == "ff" and width is None:
        match = re.search(r"_w(\d+)", str(params.get("variant")))
        width = int(match[1]) if match else None
    return {
        "run_id": run_id,
        "table": table_of(
            str(params.get("task_name") or params.get("experiment") or ""), params.get("tags")
        ),
        "dataset": params.get("data") or "",
        "layer": layer,
        "width": width,
        "leaf_width": params.get("layer.leaf_width") or (variant["leaf"] if variant else None),
        "depth": params.get("layer.depth") or (variant["depth"] if variant else None),
        "seed": params.get("seed"),
        "task_name": str(params.get("task_name") or ""),
        "status": status,
    }


def normalize_runs(rows: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with exactly ``RUN_COLUMNS`` and fixed types (strings with "" for
    missing, nullable integers, floats), sorted by run id: the same rows always give the same
    frame, from metrics.json files or from ``runs.csv``."""
    frame = pd.DataFrame(rows)
    out = pd.DataFrame(index=range(len(frame)))
    for column in RUN_COLUMNS:
        values = frame[column] if column in frame else pd.Series([None] * len(frame))
        values = values.reset_index(drop=True)
        if column in STRING_COLUMNS:
            out[column] = [_text(v) for v in values]
        elif column in INT_COLUMNS:
            out[column] = pd.array([_integer(v) for v in values], dtype="Int64")
        else:
            out[column] = pd.to_numeric(values.map(_number), errors="coerce").astype("float64")
    return out.sort_values("run_id", kind="stable").reset_index(drop=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _number(value: Any) -> float | None:
    if _missing(value) or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int | None:
    number = _number(value)
    if number is None or math.isinf(number) or number != int(number):
        return None
    return int(number)
