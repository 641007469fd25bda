"""The layout of a run's results, without torch: training writes it (metrics.json and the W&B
summary), the report reads it (:mod:`fastff.report`)."""

from __future__ import annotations

SCHEMA_VERSION = 2
"""Version of metrics.json's layout (1: before ``schema_version`` existed)."""

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
)
"""The result keys of metrics.json that also go into the W&B summary."""
