"""The paper's evaluation protocol as a Lightning callback: M_A, G_A and epochs-to-target (ETT).

Each epoch the model is evaluated with hard inference on the whole training split and on the
validation split (the module logs them as ``train_eval/acc`` and ``val/acc``). M_A is the best
training-split accuracy and ETT_M the 1-based epoch that reached it; the best validation epoch
(ETT_G) selects the checkpoint whose test accuracy is G_A. Training stops once neither score
improved for ``patience`` epochs: ``protocol/improvements`` counts the epochs in which either
improved, so Lightning's EarlyStopping can watch it.

The protocol's state belongs to the run: it is saved in every checkpoint and restored when a fit
resumes from one, but loading a checkpoint to *test* it leaves the run's state alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L

TRAIN_ACC, VAL_ACC = "train_eval/acc", "val/acc"
IMPROVEMENTS = "protocol/improvements"
ENTROPY_PREFIX = "train/entropy/"
HISTORY_EXTRAS = {"val/acc_soft": "val_acc_soft", "train_eval/acc_soft": "train_acc_soft"}
"""Epoch metrics copied into the history when they were logged: key -> history name."""
ROUTING_PREFIX = "routing/"


@dataclass
class ProtocolTracker:
    """Best training-split and validation accuracy so far, and the epochs they were reached."""

    best_train: float = float("-inf")
    best_val: float = float("-inf")
    ett_m: int | None = None
    ett_g: int | None = None
    improvements: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """Per epoch: ``epoch``, ``train_acc``, ``val_acc`` (hard, fractions) and, for FFF models,
    ``entropy/<layer>/level_<m>``: the epoch's mean node entropy of each hosted FFF per level;
    ``routing/<layer>/{leaves_reached,top_leaf_share,dead_units}`` (``RoutingStats``); the soft
    mixture's ``val_acc_soft`` and ``train_acc_soft`` where they were measured."""

    def update(self, epoch: int, train_acc: float, val_acc: float) -> None:
        """Record 1-based ``epoch`` with its hard accuracies (fractions in [0, 1])."""
        improved = False
        if train_acc > self.best_train:
            self.best_train, self.ett_m, improved = train_acc, epoch, True
        if val_acc > self.best_val:
            self.best_val, self.ett_g, improved = val_acc, epoch, True
        self.improvements += int(improved)
        self.history.append({"epoch": epoch, "train_acc": train_acc, "val_acc": val_acc})

    @property
    def memorization_accuracy(self) -> float | None:
        """M_A as a fraction, or None before the first epoch."""
        return None if self.ett_m is None else self.best_train

    @property
    def best_validation_accuracy(self) -> float | None:
        """Best validation accuracy as a fraction, or None before the first epoch."""
        return None if self.ett_g is None else self.best_val


class PaperProtocol(L.Callback):
    """Tracks M_A / ETT_M / ETT_G and the per-epoch history; logs ``protocol/improvements``.

    Reads the epoch's hard accuracies from ``trainer.callback_metrics`` at the end of each
    training epoch in which validation ran, before EarlyStopping and ModelCheckpoint look at the
    metrics, so a checkpoint holds the protocol state up to and including its own epoch.
    """

    def __init__(self) -> None:
        self.tracker = ProtocolTracker()
        self._validated_epoch: int | None = None
        self._stage: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stage = stage

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validated_epoch != trainer.current_epoch:
            return
        metrics = trainer.callback_metrics
        train_acc = float(metrics[TRAIN_ACC]) if TRAIN_ACC in metrics else math.nan
        self.tracker.update(trainer.current_epoch + 1, train_acc, float(metrics[VAL_ACC]))
        # The epoch's mean node entropy per hosted FFF and tree level (the paper's Figures 5-6),
        # how the hard tree uses its leaves, and the soft mixture's accuracies.
        record = self.tracker.history[-1]
        for key, value in metrics.items():
            if key.startswith(ENTROPY_PREFIX):
                record[key.removeprefix("train/")] = float(value)
            elif key.startswith(ROUTING_PREFIX):
                record[key] = float(value)
            elif key in HISTORY_EXTRAS:
                record[HISTORY_EXTRAS[key]] = float(value)
        pl_module.log(IMPROVEMENTS, float(self.tracker.improvements))
        pl_module.log("protocol/M_A", self.tracker.best_train)
        pl_module.log("protocol/best_val_acc", self.tracker.best_val)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.tracker)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks whenever it loads a checkpoint, also to test one; only
        # resuming a fit continues that checkpoint's protocol.
        if self._stage == "fit":
            self.tracker = ProtocolTracker(**state_dict)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Checkpoints written before the protocol was a callback kept its state under "protocol".
        legacy = checkpoint.get("protocol")
        if legacy is not None and self._stage == "fit" and not self.tracker.history:
            self.tracker = ProtocolTracker(**legacy)

    def results(self) -> dict[str, Any]:
        """M_A, ETT_M, ETT_G, best validation accuracy (fractions), epochs and history."""
        tracker = self.tracker
        return {
            "M_A": tracker.memorization_accuracy,
            "ETT_M": tracker.ett_m,
            "ETT_G": tracker.ett_g,
            "best_val_acc": tracker.best_validation_accuracy,
            "epochs": len(tracker.history),
            "history": list(tracker.history),
        }
