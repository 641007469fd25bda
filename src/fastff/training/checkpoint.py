"""Load a trained model or layer from a fastff Lightning checkpoint as a plain nn.Module."""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch
from torch import nn

from fastff.models import layer_builders
from fastff.models.layer_builders import LAYER_CLASSES
from fastff.training.builders import build_model


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict; raises FileNotFoundError / ValueError with the path named.

    Loaded with ``torch.load(weights_only=True)``: a fastff checkpoint holds only tensors and plain
    Python containers, numbers and strings, so a file that needs anything else (a pickled object,
    which could run code) is refused with one line saying which type it wanted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ckpt_path: no checkpoint file at {os.fspath(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"the Python object {wanted.group(1)}" if wanted else "a Python object"
        raise ValueError(
            f"ckpt_path: {os.fspath(path)!r} needs {what} to load, which a fastff checkpoint never "
            "holds; refused (loading it could run code)"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"ckpt_path: {os.fspath(path)!r} is not a readable checkpoint (truncated or not a "
            f"torch file: {str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if (
        not isinstance(ckpt, dict)
        or "state_dict" not in ckpt
        or "config" not in ckpt.get("hyper_parameters", {})
    ):
        raise ValueError(
            f"ckpt_path: {os.fspath(path)!r} is not a checkpoint written by fastff.train"
        )
    return ckpt


def run_config(ckpt: dict) -> dict[str, Any]:
    """The resolved run config stored in a checkpoint, in today's layout."""
    run = dict(ckpt["hyper_parameters"]["config"]["run"])
    run["layer"] = upgrade_layer_config(run["layer"])
    return run


def upgrade_layer_config(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer config in today's layout: checkpoints written before layer configs were Hydra
    partials hold ``{"name": "fff", ...}`` instead of ``{"_target_": ..., "_partial_": true}``."""
    if "_target_" in layer:
        return layer
    rest = {key: value for key, value in layer.items() if key != "name"}
    name = layer.get("name")
    if name not in LAYER_CLASSES:
        raise ValueError(f"ckpt_path: the checkpoint's layer config names no known layer: {layer}")
    return {"_target_": f"{layer_builders.__name__}.{name}", "_partial_": True, **rest}


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained backbone (e.g. ``FlatNet``) from a checkpoint, in eval mode.

    Example::

        model = load_model("outputs/train/runs/<time>/checkpoints/last.ckpt")
        logits = model(images)          # hard FFF inference (eval mode)
        fff = model.layer               # the trained fastff.layers.FFF
    """
    ckpt = read_checkpoint(path, map_location)
    meta = ckpt["hyper_parameters"]["config"]
    config = run_config(ckpt)
    model = build_model(config["model"], config["layer"], meta["input_shape"], meta["num_classes"])
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.eval()


def load_layer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained layer (FFF, FF or MoE) of a flat-net checkpoint, in eval mode."""
    return load_model(path, map_location).layer
