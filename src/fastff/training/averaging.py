"""Which weights a run evaluates: the trained ones, or an average kept by Lightning's own
``WeightAveraging`` callbacks (``callbacks=ema``: ``EMAWeightAveraging``).

With a weight-averaging callback, Lightning swaps the averaged weights in for every validation
epoch and saves them as each checkpoint's ``state_dict``, so validation (M_A, model selection,
early stopping), the best checkpoint and the test on it (G_A) all see the averaged weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, WeightAveraging


def evaluated_weights(
    callbacks: Iterable[Callback], callback_cfgs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """metrics.json's record of the weights validation, checkpoints and test use:
    ``evaluated_weights`` (``"trained"``, ``"ema"`` or ``"averaged"``) and, for an EMA, its
    ``ema_decay`` (read from the callback's config entry in ``callback_cfgs``)."""
    for callback in callbacks:
        if isinstance(callback, EMAWeightAveraging):
            decay = None
            for entry in (callback_cfgs or {}).values():
                target = str((entry or {}).get("_target_", ""))
                if target.endswith("EMAWeightAveraging"):
                    decay = float(entry.get("decay", 0.999))  # Lightning's default
            return {"evaluated_weights": "ema", "ema_decay": decay}
        if isinstance(callback, WeightAveraging):
            return {"evaluated_weights": "averaged", "ema_decay": None}
    return {"evaluated_weights": "trained", "ema_decay": None}


def averaged_weights_for_testing(trainer: Any) -> None:
    """Drop the weight-averaging callbacks from a fitted ``trainer`` before it tests a checkpoint.

    A checkpoint's ``state_dict`` holds the averaged weights, but a ``WeightAveraging`` callback
    still set up from the fit reloads the trained weights (``current_model_state``) over them when
    the checkpoint is loaded, and testing never swaps the average in: G_A would be the trained
    weights'. Without the callback the test runs on the checkpoint's averaged ``state_dict``.
    """
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
