"""Callbacks that keep a run honest: stop at once on a non-finite loss, reproducible epochs."""

from __future__ import annotations

import math
import random

import lightning as L
import numpy as np
import torch

from fastff.errors import StopRun


class Diverged(StopRun):
    """The training loss became NaN or infinite; the run stopped and reports status ``diverged``."""

    status = "diverged"


class DivergenceGuard(L.Callback):
    """Raises :class:`Diverged` after the first training batch whose loss is not finite.

    No checkpoint is written after that batch, so ``last.ckpt`` stays the last good epoch.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise Diverged(
                f"training diverged: the loss is {value} at epoch {trainer.current_epoch + 1}, "
                f"batch {batch_idx + 1} (optimizer.lr={_lr(trainer)}); lower optimizer.lr. "
                "The last good checkpoint is the last completed epoch's last.ckpt"
            )


def _lr(trainer: L.Trainer) -> float | None:
    try:
        return trainer.optimizers[0].param_groups[0]["lr"]
    except (IndexError, KeyError, AttributeError):
        return None


def derived_seed(*entropy: int) -> int:
    """A 32-bit RNG seed that is a function of ``entropy`` alone (e.g. seed, epoch, batch)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochSeeding(L.Callback):
    """Reseeds torch, numpy and random from ``(seed, epoch)`` before each training epoch and from
    ``(seed, epoch, batch)`` before each training step.

    Dropout, region leak, MoE noise and augmentation then draw the same numbers in a resumed run
    as in an uninterrupted one (Lightning checkpoints hold no RNG state, and Lightning itself draws
    from the global RNG a different number of times when it resumes).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reseed(derived_seed(self.seed, trainer.current_epoch))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        reseed(derived_seed(self.seed, trainer.current_epoch, batch_idx))
