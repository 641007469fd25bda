"""The LightningModule: cross-entropy plus every aux_loss, hard-inference accuracy metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from fastff.training.layer_stats import level_entropies, soft_inference, total_aux_loss

VAL, TRAIN_EVAL = 0, 1
EPOCH_METRICS = ("val/acc", "val/loss", "train_eval/acc")
"""Per-epoch metrics a scheduler, checkpoint or early stopping may watch (besides callbacks')."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class ClassifierModule(L.LightningModule):
    """Trains a backbone on (images (B, C, H, W), labels (B,)) batches.

    Training runs the layers' soft (training-mode) forward; validation and test run ``eval()``,
    i.e. hard inference for FFF. Validation expects two dataloaders: the validation split (index 0)
    and the whole training split without augmentation (index 1); their hard accuracies are logged as
    ``val/acc`` and ``train_eval/acc`` (what the paper's protocol callback reads).

    Args:
        model: the backbone, e.g. ``FlatNet``.
        optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (a Hydra partial).
        num_classes: number of classes.
        lr_schedule: optional Lightning ``lr_scheduler`` settings whose ``scheduler`` entry is a
            factory ``scheduler(optimizer)`` (a Hydra partial), e.g. ``{"scheduler":
            partial(ReduceLROnPlateau, mode="max"), "monitor": "val/acc", "interval": "epoch"}``.
        log_soft_accuracy: also log the soft forward's accuracy (diagnostic).
        compile_model: compile the backbone with ``torch.compile`` when fit, validate or test
            starts (``model.compile()``, in place: state_dict keys, checkpoints and callbacks
            that copy the model are unaffected); ``True`` or a dict of ``torch.compile``
            keyword arguments (e.g. ``{"mode": "max-autotune"}``).
        config: plain-dict run config stored in checkpoints (rebuilds the model in ``load_model``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None,
        num_classes: int,
        lr_schedule: dict[str, Any] | None = None,
        log_soft_accuracy: bool = True,
        compile_model: bool | dict[str, Any] = False,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_schedule"])
        self.model = model
        self.optimizer_factory = optimizer
        self.lr_schedule = dict(lr_schedule) if lr_schedule else None
        self.log_soft_accuracy = log_soft_accuracy
        self.compile_model = compile_model

        def accuracy() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, average="micro")

        self.train_acc_soft = accuracy()
        self.val_acc, self.val_acc_soft, self.train_eval_acc = accuracy(), accuracy(), accuracy()
        self.test_acc, self.test_acc_soft = accuracy(), accuracy()

    def setup(self, stage: str) -> None:
        """Compile the backbone in place when ``compile_model`` asks for it (once)."""
        if self.compile_model and getattr(self.model, "_compiled_call_impl", None) is None:
            options = self.compile_model if isinstance(self.compile_model, dict) else {}
            self.model.compile(**options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, num_classes), in the model's current mode."""
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        logits = self.model(x)
        ce = F.cross_entropy(logits.float(), y)
        aux = total_aux_loss(self.model, ce)
        loss = ce + aux
        self.train_acc_soft(logits, y)
        n = y.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/ce", ce, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/aux_loss", aux, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/acc_soft", self.train_acc_soft, on_step=False, on_epoch=True, batch_size=n)
        for key, value in level_entropies(self.model).items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _soft_logits(self, x: torch.Tensor) -> torch.Tensor:
        with soft_inference(self.model):
            return self.model(x)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self.model(x)
        n = y.shape[0]
        if dataloader_idx == TRAIN_EVAL:
            self.train_eval_acc.update(logits, y)
            return
        self.val_acc.update(logits, y)
        loss = F.cross_entropy(logits.float(), y)
        self.log(
            "val/loss", loss, on_epoch=True, batch_size=n, add_dataloader_idx=False, sync_dist=True
        )
        if self.log_soft_accuracy:
            self.val_acc_soft.update(self._soft_logits(x), y)

    def on_validation_epoch_end(self) -> None:
        val_acc = self.val_acc.compute().item()
        self.log("val/acc", val_acc, prog_bar=True)
        self.val_acc.reset()
        if self.log_soft_accuracy and self.val_acc_soft.update_count:
            self.log("val/acc_soft", self.val_acc_soft.compute().item())
            self.val_acc_soft.reset()
        if self.train_eval_acc.update_count:
            self.log("train_eval/acc", self.train_eval_acc.compute().item(), prog_bar=True)
            self.train_eval_acc.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.test_acc.update(self.model(x), y)
        if self.log_soft_accuracy:
            self.test_acc_soft.update(self._soft_logits(x), y)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute().item())
        self.test_acc.reset()
        if self.log_soft_accuracy and self.test_acc_soft.update_count:
            self.log("test/acc_soft", self.test_acc_soft.compute().item())
            self.test_acc_soft.reset()

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.lr_schedule is None:
            return optimizer
        schedule = {**self.lr_schedule, "scheduler": self.lr_schedule["scheduler"](optimizer)}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
