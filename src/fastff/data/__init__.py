"""LightningDataModules for fastff: offline sets (digits, mnist5k) and the paper's six datasets.

Every datamodule yields (images float32 (B, C, H, W), labels int64 (B,)) batches; see
``ClassificationDataModule`` for the settings they share.
"""

from __future__ import annotations

from fastff.data.base import ClassificationDataModule, OfficialSplits
from fastff.data.digits import DigitsDataModule
from fastff.data.errors import DatasetError, DatasetMissingError
from fastff.data.mnist5k import MNIST5kDataModule
from fastff.data.torchvision_sets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
    USPSDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DatasetError",
    "DatasetMissingError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
    "OfficialSplits",
    "SVHNDataModule",
    "TorchvisionDataModule",
    "USPSDataModule",
]
