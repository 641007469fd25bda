"""How each FFF uses its tree on the training split: leaves reached, their load, dead leaf units.

The paper explains poor small-leaf results by *overfragmentation* (deep trees of narrow leaves that
fit their regions but generalize badly); a run can also fail by *collapse* (hardening drives every
input to a few leaves whose units are dead) or by *under-fitting of the hard routing* (the soft
mixture fits the training data, the hard tree does not). Telling these apart needs, per epoch:

- ``routing/<layer>/leaves_reached``: fraction of the 2**depth leaves that receive at least one
  training input under hard routing;
- ``routing/<layer>/top_leaf_share``: fraction of the training inputs (tokens, in a transformer)
  routed to the most loaded leaf;
- ``routing/<layer>/dead_units``: fraction of the hidden units of *reached* leaves whose activation
  is zero for every training input routed to their leaf (ReLU units that never fire);
- ``train_eval/acc_soft`` (with ``soft_train_accuracy``): the soft mixture's accuracy on the
  training split, beside the hard ``train_eval/acc`` the protocol already records.

`RoutingStats` gathers them during the protocol's evaluation pass over the training split (the
validation loop's second dataloader), so they cost one extra routing and one leaf product per
input, no extra pass over the data; the protocol callback copies them into ``metrics.json``'s
per-epoch history.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from fastff.layers import FFF
from fastff.training.layer_stats import fff_layers, soft_inference
from fastff.training.protocol import ROUTING_PREFIX

SOFT_TRAIN_ACC = "train_eval/acc_soft"
TRAIN_EVAL_DATALOADER = 1


class _LeafUsage:
    """Per leaf of one FFF: inputs routed to it, and which of its units fired at least once."""

    def __init__(self, layer: FFF) -> None:
        self.layer = layer
        leaves = 2**layer.depth
        device = layer.w1s.device
        self.counts = torch.zeros(leaves, dtype=torch.long, device=device)
        self.fired = torch.zeros(leaves, layer.leaf_width, dtype=torch.bool, device=device)

    @torch.no_grad()
    def record(self, x: torch.Tensor) -> None:
        """Add the inputs ``x`` (..., in_features) of one forward of the layer."""
        x2d = x.reshape(-1, x.shape[-1])
        if x2d.shape[0] == 0:
            return
        leaves = self.layer.leaf_indices(x2d)  # (N,)
        self.counts += torch.bincount(leaves, minlength=self.counts.numel())
        for leaf in torch.unique(leaves).tolist():
            rows = x2d[leaves == leaf].to(self.layer.w1s.dtype)  # (n_leaf, D)
            hidden = self.layer.activation(rows @ self.layer.w1s[leaf] + self.layer.b1s[leaf])
            self.fired[leaf] |= (hidden != 0).any(dim=0)

    def summary(self) -> dict[str, float]:
        """``leaves_reached``, ``top_leaf_share`` and ``dead_units`` (fractions; empty: {})."""
        total = int(self.counts.sum())
        if total == 0:
            return {}
        reached = self.counts > 0
        units = int(reached.sum()) * self.layer.leaf_width
        dead = int((~self.fired[reached]).sum())
        return {
            "leaves_reached": float(reached.float().mean()),
            "top_leaf_share": float(self.counts.max()) / total,
            "dead_units": dead / units if units else 0.0,
        }


class RoutingStats(L.Callback):
    """Logs ``routing/<layer>/*`` (and optionally ``train_eval/acc_soft``) once per validation.

    Args:
        soft_train_accuracy: also evaluate the soft mixture on the training split (one more
            forward of every training input per epoch).
    """

    def __init__(self, soft_train_accuracy: bool = False) -> None:
        self.soft_train_accuracy = soft_train_accuracy
        self._usage: dict[str, _LeafUsage] = {}
        self._handles: list[Any] = []
        self._soft_acc: MulticlassAccuracy | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._usage = {}
        if self.soft_train_accuracy and self._soft_acc is None:
            num_classes = pl_module.hparams.get("num_classes")
            self._soft_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        if self._soft_acc is not None:
            self._soft_acc = self._soft_acc.to(pl_module.device)
            self._soft_acc.reset()

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != TRAIN_EVAL_DATALOADER or trainer.sanity_checking:
            return
        model = getattr(pl_module, "model", pl_module)
        for name, layer in fff_layers(model):
            usage = self._usage.setdefault(name, _LeafUsage(layer))
            self._handles.append(
                layer.register_forward_pre_hook(lambda _m, args, u=usage: u.record(args[0]))
            )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._remove_hooks()
        if dataloader_idx != TRAIN_EVAL_DATALOADER or trainer.sanity_checking:
            return
        if self._soft_acc is not None:
            x, y = batch
            model = getattr(pl_module, "model", pl_module)
            with torch.no_grad(), soft_inference(model):
                self._soft_acc.update(model(x), y)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()
        if trainer.sanity_checking:
            return
        for name, usage in self._usage.items():
            for key, value in usage.summary().items():
                pl_module.log(f"{ROUTING_PREFIX}{name}/{key}", value)
        if self._soft_acc is not None and self._soft_acc.update_count:
            pl_module.log(SOFT_TRAIN_ACC, self._soft_acc.compute().item())

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
