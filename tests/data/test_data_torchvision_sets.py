"""The paper's six datasets, loaded from tiny files in torchvision's on-disk formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datamodules import DATAMODULES
from fake_datasets import (
    N_TEST,
    N_TRAIN,
    NUM_CLASSES,
    SHAPES,
    TORCHVISION_SETS,
    write_fake_dataset,
    write_idx,
)

from fastff.data import DatasetError

N_VAL = round(N_TRAIN * 0.1)


def make(name, data_dir, **kwargs):
    kwargs = {"download": False, "check_integrity": False, **kwargs}
    dm = DATAMODULES[name](data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def all_batches(loader):
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_loads_what_was_written(tmp_path, name):
    written = write_fake_dataset(name, tmp_path)
    dm = make(name, tmp_path, batch_size=16, eval_batch_size=7)
    assert dm.input_shape == SHAPES[name] and dm.num_classes == NUM_CLASSES[name]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (
        N_TRAIN - N_VAL,
        N_VAL,
        N_TEST,
    )

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, *SHAPES[name]) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64

    # The test set comes back in file order, pixel for pixel, scaled to [0, 1].
    test_x, test_y = all_batches(dm.test_dataloader())
    images, labels = written["test"]
    assert test_x.shape == (N_TEST, *SHAPES[name])
    torch.testing.assert_close(test_x, torch.from_numpy(images).float() / 255, rtol=0, atol=0)
    assert torch.equal(test_y, torch.from_numpy(labels))

    # Train + validation together are exactly the official training set.
    train_x, train_y = all_batches(dm.train_eval_dataloader())
    val_x, val_y = all_batches(dm.val_dataloader())
    images, labels = written["train"]
    got = torch.cat([train_x, val_x]).mul(255).round().to(torch.uint8)
    want = torch.from_numpy(images)
    assert sorted(map(bytes, got.flatten(1).numpy())) == sorted(map(bytes, want.flatten(1).numpy()))
    assert torch.equal(
        torch.cat([train_y, val_y]).sort().values, torch.from_numpy(labels).sort().values
    )
    assert int(train_y.min()) >= 0 and int(train_y.max()) < NUM_CLASSES[name]


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_split_is_seeded(tmp_path, name):
    write_fake_dataset(name, tmp_path)

    def val_images(seed):
        return make(name, tmp_path, seed=seed).val_set.images

    assert torch.equal(val_images(3), val_images(3))
    assert not torch.equal(val_images(3), val_images(4))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_normalisations(tmp_path, name):
    write_fake_dataset(name, tmp_path)
    plain = all_batches(make(name, tmp_path).test_dataloader())[0]
    assert plain.min() >= 0 and plain.max() <= 1
    half = all_batches(make(name, tmp_path, normalization="half").test_dataloader())[0]
    torch.testing.assert_close(half, (plain - 0.5) / 0.5)

    dm = make(name, tmp_path, normalization="standard")
    official = torch.cat([all_batches(dm.train_eval_dataloader())[0], dm.val_set[:][0]])
    # Measured on the official training set: zero mean and unit std per channel there.
    torch.testing.assert_close(
        official.mean(dim=(0, 2, 3)), torch.zeros(official.shape[1]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        official.std(dim=(0, 2, 3), correction=0), torch.ones(official.shape[1]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "usps"])
def test_checksums_are_verified_by_default(tmp_path, name):
    write_fake_dataset(name, tmp_path)
    dm = DATAMODULES[name](data_dir=str(tmp_path), download=False)
    assert dm.check_integrity is True
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        dm.setup("fit")
    assert "data.check_integrity=false" in str(info.value)
    assert name in str(info.value)


def test_mnist_raw_files_have_no_published_checksum(tmp_path):
    write_fake_dataset("mnist", tmp_path)
    dm = DATAMODULES["mnist"](data_dir=str(tmp_path), download=False, check_integrity=True)
    dm.setup("fit")
    assert len(dm.test_set) == N_TEST


def test_augmentation_changes_training_batches_only(tmp_path):
    write_fake_dataset("cifar10", tmp_path)
    dm = make("cifar10", tmp_path, augment=True, batch_size=N_TRAIN)
    assert dm.hflip is True  # CIFAR's default; digit-like sets default to no flips
    torch.manual_seed(0)
    augmented, labels = dm.train_set[list(range(len(dm.train_set)))]
    plain, plain_labels = dm.train_eval_set[list(range(len(dm.train_set)))]
    assert augmented.shape == plain.shape and torch.equal(labels, plain_labels)
    assert not torch.equal(augmented, plain)
    assert augmented.min() >= 0 and augmented.max() <= 1
    # Evaluation loaders never augment.
    assert torch.equal(all_batches(dm.train_eval_dataloader())[0], plain)


@pytest.mark.parametrize(
    ("name", "flips"), [("mnist", False), ("usps", False), ("svhn", False), ("cifar100", True)]
)
def test_flip_default_per_dataset(name, flips):
    assert DATAMODULES[name](download=False).hflip is flips
    assert DATAMODULES[name](download=False, hflip=not flips).hflip is (not flips)


def test_labels_out_of_range_are_reported(tmp_path):
    written = write_fake_dataset("mnist", tmp_path)
    # Rewrite the test labels with a class 10 that MNIST does not have.
    labels = written["test"][1].copy()
    labels[0] = 10
    write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte", labels.astype(np.uint8))
    with pytest.raises(DatasetError, match=r"labels in \[0, 10\], expected \[0, 9\]"):
        make("mnist", tmp_path)
