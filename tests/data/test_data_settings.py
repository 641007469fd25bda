"""Datamodule settings: validation before any work, defaults, and the batch-level dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datamodules import DATAMODULES
from torch.utils.data import DataLoader

from fastff.data import DigitsDataModule
from fastff.data.splits import train_val_split
from fastff.data.tensor_dataset import ImageTensorDataset, collate_batch
from fastff.data.transforms import make_augmentation

BAD_SETTINGS = [
    ("batch_size", 0, "data.batch_size must be an integer >= 1, got 0"),
    ("batch_size", 2.5, "data.batch_size must be an integer >= 1"),
    ("eval_batch_size", -1, "data.eval_batch_size must be an integer >= 1"),
    ("val_fraction", 0.0, "data.val_fraction must be a number in (0, 1), got 0.0"),
    ("val_fraction", 1.0, "data.val_fraction must be a number in (0, 1), got 1.0"),
    ("val_fraction", "0.1", "data.val_fraction must be a number"),
    ("seed", -3, "data.seed must be an integer >= 0"),
    ("num_workers", -1, "data.num_workers must be an integer >= 0"),
    ("pin_memory", "yes", "data.pin_memory must be true or false, got 'yes'"),
    (
        "normalization",
        "foo",
        "data.normalization must be one of ['none', 'half', 'standard'], got 'foo'",
    ),
    ("augment", 1, "data.augment must be true or false, got 1"),
    ("hflip", "no", "data.hflip must be true or false"),
    ("affine_degrees", -5, "data.affine_degrees must be a number in [0, 180], got -5"),
    ("affine_translate", 1.5, "data.affine_translate must be a number in [0, 1], got 1.5"),
    ("affine_scale", [1.2, 0.8], "data.affine_scale must be [min, max] with 0 < min <= max"),
    ("affine_scale", 1.0, "data.affine_scale must be [min, max]"),
    ("data_dir", 3, "data.data_dir must be a path, got 3"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_SETTINGS)
@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_bad_setting_is_one_clear_value_error(name, key, value, message):
    with pytest.raises(ValueError) as info:
        DATAMODULES[name](**{key: value})
    assert message in str(info.value)


@pytest.mark.parametrize("key", ["download", "check_integrity"])
def test_bad_download_setting(key):
    with pytest.raises(ValueError, match=f"data.{key} must be true or false, got 'no'"):
        DATAMODULES["svhn"](**{key: "no"})


def test_attributes_before_setup_do_no_io(tmp_path):
    dm = DATAMODULES["mnist"](data_dir=str(tmp_path / "absent"), batch_size=64)
    assert (dm.name, dm.num_classes, dm.input_shape) == ("mnist", 10, (1, 28, 28))
    assert (dm.batch_size, dm.eval_batch_size) == (64, 1024)
    assert DATAMODULES["cifar100"](batch_size=4096).eval_batch_size == 4096
    assert DATAMODULES["cifar100"](eval_batch_size=100).eval_batch_size == 100
    assert not (tmp_path / "absent").exists()
    shapes = {name: cls.input_shape for name, cls in DATAMODULES.items()}
    assert shapes == {
        "digits": (1, 8, 8),
        "mnist5k": (1, 28, 28),
        "usps": (1, 16, 16),
        "mnist": (1, 28, 28),
        "fashion_mnist": (1, 28, 28),
        "cifar10": (3, 32, 32),
        "cifar100": (3, 32, 32),
        "svhn": (3, 32, 32),
    }


def test_train_val_split_sizes_and_determinism():
    train, val = train_val_split(1000, 0.1, seed=5)
    assert (len(train), len(val)) == (900, 100)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1000))
    assert torch.equal(val, train_val_split(1000, 0.1, seed=5)[1])
    assert not torch.equal(val, train_val_split(1000, 0.1, seed=6)[1])
    assert [len(part) for part in train_val_split(3, 0.01, seed=0)] == [2, 1]
    with pytest.raises(ValueError, match="at least 2"):
        train_val_split(1, 0.1, seed=0)


def test_batches_come_from_one_indexing_per_batch():
    images = torch.arange(5 * 4, dtype=torch.uint8).reshape(5, 1, 2, 2)
    labels = torch.tensor([0, 1, 2, 3, 4])
    ds = ImageTensorDataset(images, labels, 20.0, torch.tensor([0.5]), torch.tensor([0.25]))
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_batch)
    x, y = next(iter(loader))
    assert x.shape == (2, 1, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x, (images[:2].float() / 20 - 0.5) / 0.25)
    assert torch.equal(y, labels[:2])
    for index in (3, np.int64(3), torch.tensor(3)):
        single_x, single_y = ds[index]
        assert single_x.shape == (1, 2, 2) and single_y.shape == () and int(single_y) == 3
    assert ds[1:3][0].shape == ds[[1, 2]][0].shape == (2, 1, 2, 2)
    assert len(list(loader)) == 3


def test_augmentation_recipe_keeps_shape_and_flip_setting():
    image = torch.rand(3, 32, 32)
    torch.manual_seed(0)
    recipe = make_augmentation(hflip=False, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    # Without flips and with an identity affine the recipe leaves the image unchanged.
    torch.testing.assert_close(recipe(image), image)
    flips = make_augmentation(hflip=True, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    outputs = [flips(image) for _ in range(20)]
    assert any(torch.equal(out, image.flip(-1)) for out in outputs)
    assert any(torch.equal(out, image) for out in outputs)
    moved = make_augmentation(hflip=False, degrees=15.0, translate=0.2, scale=(0.8, 1.2))(image)
    assert moved.shape == image.shape and not torch.equal(moved, image)


def test_digits_training_loader_is_seeded_and_augmentable():
    def first_labels(**kwargs):
        dm = DigitsDataModule(batch_size=16, **kwargs)
        return next(iter(dm.train_dataloader()))[1]

    assert torch.equal(first_labels(seed=1), first_labels(seed=1))
    dm = DigitsDataModule(batch_size=16, augment=True)
    assert dm.hflip is False  # digits are never flipped unless asked
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8)


def test_worker_processes_give_the_same_batches():
    plain = DigitsDataModule(eval_batch_size=500)
    workers = DigitsDataModule(eval_batch_size=500, num_workers=1)
    for a, b in zip(plain.val_dataloader(), workers.val_dataloader(), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    shuffled = [y for _, y in workers.train_dataloader()]
    assert torch.equal(torch.cat(shuffled).sort().values, workers.train_set.labels.sort().values)


def test_standard_stats_from_histogram_match_direct_computation():
    from fastff.data.transforms import channel_mean_std

    images = torch.randint(0, 256, (300, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_mean_std(images, 255.0)
    scaled = images.double() / 255
    torch.testing.assert_close(mean, scaled.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, scaled.std(dim=(0, 2, 3), correction=0).float())
    float_mean, float_std = channel_mean_std(images.float(), 255.0)
    torch.testing.assert_close((float_mean, float_std), (mean, std))
