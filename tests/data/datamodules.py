"""Every dataset's datamodule class by its name (what ``data=<name>`` selects)."""

from __future__ import annotations

from fastff.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ClassificationDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNIST5kDataModule,
    MNISTDataModule,
    SVHNDataModule,
    USPSDataModule,
)

DATAMODULES: dict[str, type[ClassificationDataModule]] = {
    cls.name: cls
    for cls in (
        DigitsDataModule,
        MNIST5kDataModule,
        USPSDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        CIFAR100DataModule,
        SVHNDataModule,
    )
}
