"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), bundled with scikit-learn."""

from __future__ import annotations

import torch

from fastff.data.offline import OfflineDataModule

DIGITS_PIXEL_MAX = 16.0  # the digits' pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)


class DigitsDataModule(OfflineDataModule):
    """Digits: 1,437 train+validation and 360 test images of shape (1, 8, 8), pixels / 16.

    The test split is fixed (see ``fastff.data.splits.OFFLINE_TEST_SPLIT_SEED``); the run seed
    splits the remaining 1,437 images into 1,293 train and 144 validation. Accepts every keyword of
    ``ClassificationDataModule``; ``data_dir`` is not used.
    """

    name = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)

    def load_all(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        from sklearn.datasets import load_digits  # imported when used: it is slow to import

        bunch = load_digits()
        images = torch.as_tensor(bunch.images, dtype=torch.uint8).unsqueeze(1)
        return images, torch.as_tensor(bunch.target, dtype=torch.int64), DIGITS_PIXEL_MAX

    def source_description(self) -> str:
        return "scikit-learn's bundled digits (sklearn.datasets.load_digits)"
