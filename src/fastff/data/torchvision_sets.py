"""Datamodules for the paper's six datasets, read with torchvision from ``data_dir``.

The whole dataset is read once into uint8 tensors; batches are sliced, scaled and normalised as
tensors (see ``fastff.data.tensor_dataset``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from fastff.data.base import ClassificationDataModule, OfficialSplits
from fastff.data.sources import SOURCES, TorchvisionSource, download, missing_error
from fastff.layers.validation import check_bool


class TorchvisionDataModule(ClassificationDataModule):
    """A dataset from torchvision.datasets, stored under ``data_dir`` in torchvision's layout.

    Args:
        data_dir: the data directory (``paths.data_dir``); each dataset has its own folder in it.
        download: download missing files in ``prepare_data`` (needs internet access).
        check_integrity: verify the published md5 checksums (CIFAR, SVHN and USPS files) before
            loading. Turn off for files you made or converted yourself.
        **kwargs: the settings of ``ClassificationDataModule`` (batch_size, normalization, ...).

    Raises:
        DatasetMissingError: (prepare_data, setup) files missing and not downloadable.
        DatasetError: (setup) a checksum mismatch or a file torchvision cannot read.
    """

    source: ClassVar[TorchvisionSource]

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "data",
        download: bool = True,
        check_integrity: bool = True,
        **kwargs: Any,
    ) -> None:
        check_bool("data.download", download)
        check_bool("data.check_integrity", check_integrity)
        super().__init__(data_dir, **kwargs)
        self.download = download
        self.check_integrity = check_integrity

    def source_description(self) -> str:
        return str(self.source.folder(self.data_dir))

    def prepare_data(self) -> None:
        """Download the dataset if files are missing and ``download`` is on; else fail clearly."""
        missing = self.source.missing(self.data_dir)
        if not missing:
            return
        if not self.download:
            raise missing_error(
                self.source, self.data_dir, missing, "downloading is off (data.download=false)"
            )
        download(self.source, self.data_dir)

    def load_official(self) -> OfficialSplits:
        missing = self.source.missing(self.data_dir)
        if missing:
            raise missing_error(
                self.source, self.data_dir, missing, "run prepare_data() to download it"
            )
        if self.check_integrity:
            self.source.verify_checksums(self.data_dir)
        train_images, train_labels = self.source.load(self.data_dir, train=True)
        test_images, test_labels = self.source.load(self.data_dir, train=False)
        return OfficialSplits(train_images, train_labels, test_images, test_labels, 255.0)


class USPSDataModule(TorchvisionDataModule):
    """USPS handwritten digits: 7,291 train and 2,007 test images of shape (1, 16, 16)."""

    name = "usps"
    num_classes = 10
    input_shape = (1, 16, 16)
    source = SOURCES["usps"]


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 train and 10,000 test images of shape (1, 28, 28)."""

    name = "mnist"
    num_classes = 10
    input_shape = (1, 28, 28)
    source = SOURCES["mnist"]


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST: 60,000 train and 10,000 test images of shape (1, 28, 28)."""

    name = "fashion_mnist"
    num_classes = 10
    input_shape = (1, 28, 28)
    source = SOURCES["fashion_mnist"]
    hflip_default = True  # clothes are left-right symmetric; digits are not


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 train and 10,000 test colour images of shape (3, 32, 32)."""

    name = "cifar10"
    num_classes = 10
    input_shape = (3, 32, 32)
    source = SOURCES["cifar10"]
    hflip_default = True


class CIFAR100DataModule(TorchvisionDataModule):
    """CIFAR-100 (fine labels): 50,000 train and 10,000 test images of shape (3, 32, 32)."""

    name = "cifar100"
    num_classes = 100
    input_shape = (3, 32, 32)
    source = SOURCES["cifar100"]
    hflip_default = True


class SVHNDataModule(TorchvisionDataModule):
    """SVHN house numbers: 73,257 train and 26,032 test images of shape (3, 32, 32).

    The "extra" set is not used (the paper trains on the official train set).
    """

    name = "svhn"
    num_classes = 10
    input_shape = (3, 32, 32)
    source = SOURCES["svhn"]
