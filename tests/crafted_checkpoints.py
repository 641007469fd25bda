"""Checkpoints written by hand, in the layout fastff.train writes, without training: the state
dict of a freshly built model and the composed run config. Tests change them to play a hostile
or corrupted file."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from pipeline_utils import compose_config

from fastff.training.builders import build_model

DIGITS_SHAPE = [1, 8, 8]
DIGITS_CLASSES = 10


def fastff_checkpoint(tmp_path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A checkpoint dict for ``fastff.train`` on digits with ``overrides``: ``state_dict``
    (``model.*`` keys) and ``hyper_parameters.config`` (run, input_shape, num_classes)."""
    cfg = compose_config("train", ["logger=none", *overrides], tmp_path / "composed")
    run = OmegaConf.to_container(cfg, resolve=True)
    model = build_model(cfg.model, cfg.layer, DIGITS_SHAPE, DIGITS_CLASSES)
    return {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "config": {"run": run, "input_shape": DIGITS_SHAPE, "num_classes": DIGITS_CLASSES}
        },
    }


def write_variant(
    ckpt: dict[str, Any], path: Path, change: Callable[[dict[str, Any]], None]
) -> Path:
    """Save a deep copy of ``ckpt`` after ``change(copy)`` to ``path``; returns the path."""
    variant = copy.deepcopy(ckpt)
    change(variant)
    torch.save(variant, path)
    return path


def run_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The recorded run config of ``ckpt`` (to change in place)."""
    return ckpt["hyper_parameters"]["config"]["run"]


FOREIGN_MESSAGES = {
    "data": "data._target_='numpy.savetxt'",
    "layer": "layer._target_='shutil.copyfile'",
    "model": "model._target_='logging.basicConfig'",
    "partial_layer": "layer._target_='numpy.savetxt'",
    "nested_activation": "layer.activation._target_='numpy.savetxt'",
    "nested_in_a_list": "data.affine_scale[1]._target_='builtins.open'",
    "interpolation": "data.data_dir='${oc.decode:",
}
"""For each foreign-code case of :func:`foreign_changes`: the part of fastff's one-line refusal
that names the setting (the refused target or interpolation)."""


def foreign_changes(marker: Path) -> dict[str, Callable[[dict[str, Any]], None]]:
    """Ways a received checkpoint could try to run code; each would write ``marker`` if its
    ``_target_`` were instantiated (numpy.savetxt, shutil.copyfile and builtins.open write
    files; Hydra 1.3 lets them through). A partial or an interpolation writes nothing on its own
    in today's code paths, but is refused all the same."""
    save = {"_target_": "numpy.savetxt", "fname": str(marker), "X": [1.0]}
    decoded = "{_target_: numpy.savetxt, fname: '" + str(marker) + "', X: [1.0]}"

    def data_target(c: dict[str, Any]) -> None:
        run_of(c)["data"] = save

    def layer_target(c: dict[str, Any]) -> None:
        run_of(c)["layer"] = {"_target_": "shutil.copyfile", "src": __file__, "dst": str(marker)}

    def model_target(c: dict[str, Any]) -> None:  # opens its file before refusing the kwargs
        run_of(c)["model"] = {"_target_": "logging.basicConfig", "filename": str(marker)}

    def partial_layer(c: dict[str, Any]) -> None:
        run_of(c)["layer"] = {**save, "_partial_": True}

    def nested_activation(c: dict[str, Any]) -> None:
        run_of(c)["layer"]["activation"] = save

    def nested_in_a_list(c: dict[str, Any]) -> None:
        opener = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
        run_of(c)["data"]["affine_scale"] = [0.9, opener]

    def interpolation(c: dict[str, Any]) -> None:
        run_of(c)["data"]["data_dir"] = '${oc.decode:"' + decoded + '"}'

    def num_classes(c: dict[str, Any]) -> None:  # merged into the model config by Hydra
        c["hyper_parameters"]["config"]["num_classes"] = save

    return {
        "data": data_target,
        "layer": layer_target,
        "model": model_target,
        "partial_layer": partial_layer,
        "nested_activation": nested_activation,
        "nested_in_a_list": nested_in_a_list,
        "interpolation": interpolation,
        "num_classes": num_classes,
    }
