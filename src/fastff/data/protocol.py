"""Validation on the validation split and on the whole training split (the paper's protocol)."""

from __future__ import annotations

from typing import Any

import lightning as L


class ProtocolDataModule(L.LightningDataModule):
    """Delegates to a ``fastff.data`` datamodule; validation yields [validation, training split].

    The second validation loader (never augmented, not shuffled) measures memorisation accuracy
    (M_A) with hard inference every epoch.
    """

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.data = data

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str) -> None:
        self.data.setup(stage)

    def train_dataloader(self):
        return self.data.train_dataloader()

    def val_dataloader(self):
        return [self.data.val_dataloader(), self.data.train_eval_dataloader()]

    def test_dataloader(self):
        return self.data.test_dataloader()
