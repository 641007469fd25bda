"""A run as one row: its settings and results, whatever it came from (metrics.json, W&B, CSV).

The row's columns are ``RUN_COLUMNS`` (the columns of ``runs.csv``). :func:`normalize_runs` gives
every frame of rows the same column types, so the tables built from ``metrics.json`` files and from
the ``runs.csv`` written of them are the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fastff.report.run_flags import run_flags
from fastff.results_schema import IDENTITY_KEYS, config_name, experiment_of
from fastff.results_schema import TABLES as TABLES  # the tables and figures import it from here

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


table_of = experiment_of
"""The experiment (paper table) a run belongs to, from its task_name and tags (old runs and sweep
trials without metrics.json; newer runs record it: metrics.json's ``experiment``)."""


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


_MISSING = object()
"""An identity field the run did not record."""

IDENTITY_COLUMNS = (
    "table", "dataset", "model", "layer", "hardening", "num_experts", "k", "gating", "seed"
)  # fmt: skip
"""The row columns that say what a run is (:func:`run_identity`)."""


def run_identity(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a run is, as its row's :data:`IDENTITY_COLUMNS`, from the fields its metrics.json
    recorded (``experiment``, ``dataset`` / ``data_config``, ``layer``, ``hardening`` with
    ``frozen_tree``, ``num_experts``, ``k``, ``gating``, ``model``, ``seed``). Fields a run did
    not record (one written before fastff recorded them, schema_version < 3) come from
    :func:`derived_identity`, the one place that works them out from the run's config."""
    # Every identity key recorded: a size key the layer's kind has none of is absent, not unknown.
    absent = None if all(key in metrics for key in IDENTITY_KEYS) else _MISSING
    recorded = {
        "table": _recorded(metrics, "experiment", _MISSING, lambda v: v or ""),
        "dataset": metrics.get("dataset") or metrics.get("data_config") or _MISSING,
        "model": metrics.get("model") or _MISSING,
        "layer": metrics.get("layer") or _MISSING,
        "hardening": _recorded(metrics, "hardening", _MISSING, lambda v: _hardening(v, metrics)),
        "num_experts": _recorded(metrics, "num_experts", absent),
        "k": _recorded(metrics, "k", absent),
        "gating": _recorded(metrics, "gating", _MISSING, lambda v: v or ""),
        "seed": _recorded(metrics, "seed", _MISSING),
    }
    missing = [key for key, value in recorded.items() if value is _MISSING]
    if not missing:
        return recorded
    derived = derived_identity(metrics)
    return recorded | {key: derived[key] for key in missing}


def _recorded(metrics: Mapping[str, Any], key: str, absent: Any, convert: Any = None) -> Any:
    if key not in metrics:
        return absent
    return convert(metrics[key]) if convert else metrics[key]


def _hardening(value: Any, metrics: Mapping[str, Any]) -> Any:
    """The FFF's h: ``inf`` for a frozen tree (the paper's h = infinity)."""
    return math.inf if metrics.get("frozen_tree") else value


def derived_identity(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`IDENTITY_COLUMNS` of a run that did not record them, from its config: the table from
    its task_name and tags, the dataset from its data config, the layer kind from its layer
    config's ``_target_``, h, expert count, k and gating from the layer config, model and seed."""
    config = metrics.get("config") or {}
    layer_cfg = lookup(config, "layer") or {}
    if not isinstance(layer_cfg, Mapping):
        layer_cfg = {}
    layer = metrics.get("layer") or _layer_kind(layer_cfg)
    hardening = None
    if layer == "fff":
        frozen = bool(layer_cfg.get("frozen_tree"))
        hardening = math.inf if frozen else layer_cfg.get("hardening")
    moe = layer == "moe"
    return {
        "table": table_of(str(lookup(config, "task_name") or ""), lookup(config, "tags")),
        "dataset": _data_name(lookup(config, "data")),
        "model": lookup(config, "model", "name"),
        "layer": layer,
        "hardening": hardening,
        "num_experts": metrics.get("num_experts", layer_cfg.get("num_experts")) if moe else None,
        "k": metrics.get("k", layer_cfg.get("k")) if moe else None,
        "gating": _gating(layer_cfg) if moe else "",
        "seed": lookup(config, "seed"),
    }


def _layer_kind(layer_cfg: Mapping[str, Any]) -> str:
    """The kind of a layer config: the one whose builder its ``_target_`` is, or (configs of
    early fastff versions) its ``name``."""
    name = config_name("layer", layer_cfg)
    if name is None and isinstance(layer_cfg.get("name"), str):
        from fastff.registry import kinds

        name = layer_cfg["name"] if layer_cfg["name"] in kinds("layer") else None
    return name or ""


def row_from_metrics(metrics: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """One row of ``RUN_COLUMNS`` from a run's metrics.json (or a W&B run turned into one)."""
    config = metrics.get("config") or {}
    identity = run_identity(metrics)
    git = (metrics.get("provenance") or {}).get("git") or {}
    error = str(metrics.get("error") or "").splitlines()
    return {
        "run_id": run_id,
        "table": identity["table"],
        "dataset": identity["dataset"],
        "model": identity["model"],
        "layer": identity["layer"],
        "width": metrics.get("width"),
        "training_width": metrics.get("training_width"),
        "leaf_width": metrics.get("leaf_width"),
        "depth": metrics.get("depth"),
        "inference_width": metrics.get("inference_width"),
        "inference_size": metrics.get("inference_size"),
        "hardening": identity["hardening"],
        "num_experts": identity["num_experts"],
        "k": identity["k"],
        "gating": identity["gating"],
        "seed": identity["seed"],
        "task_name": str(lookup(config, "task_name") or ""),
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
    name = config_name("data", data_cfg)
    if name is not None:
        return name
    target = str(data_cfg.get("_target_") or "")
    return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower()


def row_from_trial(params: Mapping[str, Any], run_id: str, status: str) -> dict[str, Any]:
    """A row for a sweep trial that left no metrics.json, from its sweep parameters (what is
    known of its settings: dataset, layer, widths, seed, tags). A ``variant`` or ``experiment``
    parameter contributes what its config sets (``conf/variant/<name>.yaml``: the layer kind,
    width, leaf width, depth; ``conf/experiment/<name>.yaml``: task_name and tags)."""
    variant = _preset("variant", params.get("variant"))
    layer_set = variant.get("layer") if isinstance(variant.get("layer"), Mapping) else {}
    experiment = _preset("experiment", params.get("experiment"))
    task_name = params.get("task_name") or experiment.get("task_name") or ""
    tags = params.get("tags") if params.get("tags") is not None else experiment.get("tags")

    def setting(key: str) -> Any:
        value = params.get(f"layer.{key}")
        return value if value is not None else layer_set.get(key)

    return {
        "run_id": run_id,
        "table": table_of(str(task_name), tags),
        "dataset": params.get("data") or "",
        "layer": params.get("layer") or _override(variant, "layer") or "",
        "width": setting("width"),
        "leaf_width": setting("leaf_width"),
        "depth": setting("depth"),
        "seed": params.get("seed"),
        "task_name": str(params.get("task_name") or ""),
        "status": status,
    }


_PRESET_NAME = re.compile(r"[A-Za-z0-9_]+")


def _preset(group: str, name: Any) -> dict[str, Any]:
    """The contents of ``conf/<group>/<name>.yaml`` (empty when there is none)."""
    if not isinstance(name, str) or not _PRESET_NAME.fullmatch(name):
        return {}
    import yaml

    from fastff.config_dir import config_dir

    path = Path(config_dir()) / group / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _override(preset: Mapping[str, Any], group: str) -> str | None:
    """The ``override /<group>: <choice>`` a preset's defaults list makes, or None."""
    for entry in preset.get("defaults") or []:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                if str(key).removeprefix("override ").strip("/ ") == group:
                    return str(value)
    return None


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
