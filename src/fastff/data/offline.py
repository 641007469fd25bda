"""Datasets bundled with installed packages: no download, no network, a fixed test split."""

from __future__ import annotations

import abc

import torch

from fastff.data.base import ClassificationDataModule, OfficialSplits
from fastff.data.splits import OFFLINE_TEST_FRACTION, OFFLINE_TEST_SPLIT_SEED, stratified_test_split


class OfflineDataModule(ClassificationDataModule):
    """A bundled set without an official test split: a fixed, stratified one is drawn.

    The test split holds ``OFFLINE_TEST_FRACTION`` (20%) of every class and is drawn with
    ``OFFLINE_TEST_SPLIT_SEED``, never with the run seed, so all runs share the same test images.
    The run seed then splits the rest 9:1 into train and validation. Subclasses implement
    ``load_all``.
    """

    @abc.abstractmethod
    def load_all(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """All images (N, C, H, W) raw, labels (N,) int64, and the raw value that maps to 1.0."""

    def load_official(self) -> OfficialSplits:
        images, labels, pixel_max = self.load_all()
        train_idx, test_idx = stratified_test_split(
            labels, OFFLINE_TEST_FRACTION, OFFLINE_TEST_SPLIT_SEED
        )
        return OfficialSplits(
            train_images=images[train_idx],
            train_labels=labels[train_idx],
            test_images=images[test_idx],
            test_labels=labels[test_idx],
            pixel_max=pixel_max,
        )
