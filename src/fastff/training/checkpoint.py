"""Load a trained model or layer from a fastff Lightning checkpoint as a plain nn.Module."""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch
from torch import nn

from fastff.errors import ConfigError
from fastff.models import kinds
from fastff.registry import check_recorded_config
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
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if (
        not isinstance(state, dict)
        or not all(isinstance(key, str) for key in state)
        or not isinstance(hparams, dict)
        or not isinstance(hparams.get("config"), dict)
    ):
        raise ValueError(
            f"ckpt_path: {os.fspath(path)!r} is not a checkpoint written by fastff.train"
        )
    return ckpt


def run_config(ckpt: dict) -> dict[str, Any]:
    """The resolved run config stored in a checkpoint, in today's layout, checked against the
    allow-list (:func:`fastff.registry.check_recorded_config`) before anything is imported.

    Raises:
        ForeignTargetError: a ``_target_`` in ``data``, ``layer`` or ``model`` (nested ones
            included) that is not one of fastff's builders, or an interpolation (one line).
        ValueError: the recorded config is not the shape fastff.train writes.
    """
    meta = ckpt["hyper_parameters"]["config"]
    if not isinstance(meta, dict) or not isinstance(meta.get("run"), dict):
        raise ValueError(
            "ckpt_path: the checkpoint holds no run config (hyper_parameters.config.run)"
        )
    run = dict(meta["run"])
    if isinstance(run.get("layer"), dict):
        run["layer"] = upgrade_layer_config(run["layer"])
    check_recorded_config(run)
    shape = meta.get("input_shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise ValueError(
            f"ckpt_path: the checkpoint's input_shape must be a list of positive integers, "
            f"got {shape!r}"
        )
    classes = meta.get("num_classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(
            f"ckpt_path: the checkpoint's num_classes must be a positive integer, got {classes!r}"
        )
    return run


def upgrade_layer_config(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer config in today's layout: checkpoints written before layer configs were Hydra
    partials hold ``{"name": "fff", ...}`` instead of ``{"_target_": ..., "_partial_": true}``."""
    if "_target_" in layer:
        return layer
    rest = {key: value for key, value in layer.items() if key != "name"}
    targets = kinds.targets()
    if layer.get("name") not in targets:
        raise ValueError(f"ckpt_path: the checkpoint's layer config names no known layer: {layer}")
    return {"_target_": targets[layer["name"]], "_partial_": True, **rest}


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
    if meta.get("quantize") is not None:  # written by fastff.quantization: compact tensors
        from fastff.quantization import check_state_dtypes, quantize, quantize_option

        model = quantize(model, quantize_option(meta["quantize"]))
        check_state_dtypes(state, model.state_dict(), prefix)
    check_state_shapes(state, model.state_dict(), prefix)
    model.load_state_dict(state)
    return model.eval()


def check_state_shapes(
    state: dict[str, Any], expected: dict[str, torch.Tensor], prefix: str = ""
) -> None:
    """Raise ValueError (one line) naming the first tensor of ``state`` that the model built from
    the config (``expected``: its state dict) lacks, has another shape, or is missing (keys
    reported with ``prefix``)."""
    for key, value in state.items():
        if key not in expected:
            raise ValueError(
                f"ckpt_path: the checkpoint holds a tensor {prefix}{key} that the model built from "
                "the config does not have; the weights do not belong to that config"
            )
        if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"ckpt_path: the checkpoint's tensor {prefix}{key} has shape {got}, but the model "
                f"built from the config needs {tuple(expected[key].shape)}; the weights do not "
                "belong to that config"
            )
    missing = [key for key in expected if key not in state]
    if missing:
        raise ValueError(
            f"ckpt_path: the checkpoint lacks the tensor {prefix}{missing[0]} (and "
            f"{len(missing) - 1} more) that the model built from the config needs"
        )


TRAINING_STATE = ("pytorch-lightning_version", "epoch", "global_step", "loops")
"""Keys of a checkpoint Lightning saved during training, besides ``state_dict``; resuming reads
them (and ``optimizer_states``, ``lr_schedulers``)."""


def check_checkpoint_fits(path: str | os.PathLike, module: nn.Module) -> None:
    """Raise ConfigError (one line) unless every tensor of the checkpoint at ``path`` has the
    name and shape of ``module``'s state dict (the LightningModule ``fastff.train`` resumes)
    and the checkpoint holds the training state resuming needs (not weights only)."""
    try:
        ckpt = read_checkpoint(path)
        check_state_shapes(ckpt["state_dict"], module.state_dict())
    except ValueError as err:
        raise ConfigError(str(err)) from None
    missing = [k for k in (*TRAINING_STATE, "optimizer_states", "lr_schedulers") if k not in ckpt]
    if missing:
        raise ConfigError(
            f"ckpt_path: {os.fspath(path)!r} holds weights only (no {missing[0]}), not a training "
            "run's state; fastff.train ckpt_path= resumes a run from its checkpoints/last.ckpt "
            "(fastff.eval and fastff.export take weights-only checkpoints)"
        )


def load_layer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained layer (FFF, FF, MoE or a registered kind) of a flat-net checkpoint, in eval
    mode."""
    return load_model(path, map_location).layer
