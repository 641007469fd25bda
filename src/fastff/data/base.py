"""The base LightningDataModule of every fastff dataset: settings, splits and loaders."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from fastff.data.errors import DatasetError
from fastff.data.splits import train_val_split
from fastff.data.tensor_dataset import ImageTensorDataset, collate_batch
from fastff.data.transforms import NORMALIZATIONS, make_augmentation, normalization_stats
from fastff.layers.validation import check_bool, check_choice, check_int, check_number


@dataclass(frozen=True)
class OfficialSplits:
    """A dataset's official train and test sets as raw tensors.

    Attributes:
        train_images: (N, C, H, W) raw pixels of the official training set.
        train_labels: (N,) int64.
        test_images: (M, C, H, W) raw pixels of the test set.
        test_labels: (M,) int64.
        pixel_max: the raw value that maps to 1.0 (255 for 8-bit images).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    pixel_max: float


class ClassificationDataModule(LightningDataModule, abc.ABC):
    """Image classification data: official train set split 9:1 into train/validation, plus test.

    Batches are (images float32 (B, C, H, W), labels int64 (B,)). Subclasses set ``name``,
    ``num_classes``, ``input_shape`` and ``hflip_default`` and implement ``load_official``.

    Args:
        data_dir: folder that holds the downloaded datasets (``paths.data_dir``).
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and the training-split evaluation;
            None means max(batch_size, 1024).
        val_fraction: fraction of the official training set held out for validation.
        seed: seed of the train/validation split and of the training shuffle.
        num_workers: DataLoader worker processes (0: load in the main process).
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        normalization: "none" (pixels in [0, 1]), "half" ((x - 0.5) / 0.5) or "standard"
            (per-channel mean/std of the official training set).
        augment: augment training batches with the ViT recipe (flip, rotate/translate/scale).
        hflip: random horizontal flips when augmenting; None uses the dataset's default
            (off for digit-like sets, on for CIFAR).
        affine_degrees: augmentation rotation range in degrees (+-).
        affine_translate: augmentation shift, as a fraction of width and height.
        affine_scale: augmentation (min, max) zoom.
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    input_shape: ClassVar[tuple[int, int, int]]
    hflip_default: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "data",
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        normalization: str = "none",
        augment: bool = False,
        hflip: bool | None = None,
        affine_degrees: float = 10.0,
        affine_translate: float = 0.1,
        affine_scale: Sequence[float] = (0.9, 1.1),
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"data.data_dir must be a path, got {data_dir!r}")
        self.data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        if eval_batch_size is None:
            eval_batch_size = max(self.batch_size, 1024)
        self.eval_batch_size = check_int("data.eval_batch_size", eval_batch_size, 1)
        self.val_fraction = check_number(
            "data.val_fraction", val_fraction, 0.0, 1.0, open_low=True, open_high=True
        )
        self.seed = check_int("data.seed", seed, 0)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        self.pin_memory = check_bool("data.pin_memory", pin_memory)
        self.normalization = check_choice("data.normalization", normalization, NORMALIZATIONS)
        self.augment = check_bool("data.augment", augment)
        self.hflip = self.hflip_default if hflip is None else check_bool("data.hflip", hflip)
        self.affine_degrees = check_number("data.affine_degrees", affine_degrees, 0.0, 180.0)
        self.affine_translate = check_number("data.affine_translate", affine_translate, 0.0, 1.0)
        self.affine_scale = self._check_scale(affine_scale)
        self.train_set: ImageTensorDataset | None = None
        self.train_eval_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None
        self.test_set: ImageTensorDataset | None = None

    @staticmethod
    def _check_scale(value: object) -> tuple[float, float]:
        message = f"data.affine_scale must be [min, max] with 0 < min <= max, got {value!r}"
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            raise ValueError(message)
        low, high = value
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError(message)
        if not 0 < low <= high:
            raise ValueError(message)
        return float(low), float(high)

    # -- what a subclass provides -----------------------------------------------------------

    @abc.abstractmethod
    def load_official(self) -> OfficialSplits:
        """Read the dataset's official train and test sets (no splitting, no normalising)."""

    def source_description(self) -> str:
        """Where the data comes from, for error messages (a folder or a bundled file)."""
        return self.data_dir

    # -- Lightning hooks ----------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Load the data once and build the train / validation / test sets (any stage)."""
        if self.train_set is not None:
            return
        official = self.load_official()
        self._check_official(official)
        mean, std = normalization_stats(
            self.normalization, official.train_images, official.pixel_max
        )
        train_idx, val_idx = train_val_split(
            official.train_images.shape[0], self.val_fraction, self.seed
        )

        def dataset(images, labels, augment=None) -> ImageTensorDataset:
            return ImageTensorDataset(images, labels, official.pixel_max, mean, std, augment)

        train_images = official.train_images[train_idx]
        train_labels = official.train_labels[train_idx]
        augmentation = None
        if self.augment:
            augmentation = make_augmentation(
                self.hflip, self.affine_degrees, self.affine_translate, self.affine_scale
            )
        self.train_set = dataset(train_images, train_labels, augmentation)
        self.train_eval_set = dataset(train_images, train_labels)
        self.val_set = dataset(official.train_images[val_idx], official.train_labels[val_idx])
        self.test_set = dataset(official.test_images, official.test_labels)

    def _check_official(self, official: OfficialSplits) -> None:
        """Raise DatasetError if the loaded tensors do not match this dataset's description."""
        for split, images, labels in (
            ("train", official.train_images, official.train_labels),
            ("test", official.test_images, official.test_labels),
        ):
            problem = None
            if images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
                problem = (
                    f"images of shape {tuple(images.shape)}, expected (N, *{self.input_shape})"
                )
            elif labels.shape != (images.shape[0],):
                problem = f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}"
            elif images.shape[0] == 0:
                problem = "no images"
            elif labels.min() < 0 or labels.max() >= self.num_classes:
                problem = (
                    f"labels in [{int(labels.min())}, {int(labels.max())}], expected "
                    f"[0, {self.num_classes - 1}]"
                )
            if problem:
                raise DatasetError(
                    f"dataset {self.name!r} from {self.source_description()}: the {split} set has "
                    f"{problem}. The files are not the dataset fastff expects."
                )
        if official.train_images.shape[0] < 2:
            raise DatasetError(
                f"dataset {self.name!r} from {self.source_description()}: the train set needs at "
                f"least 2 images to split off validation, got {official.train_images.shape[0]}"
            )

    def train_dataloader(self) -> DataLoader:
        """Training split, shuffled (seeded by ``seed``), augmented if ``augment``."""
        return self._loader(self._ready().train_set, self.batch_size, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        """Training split in order, never augmented: for memorisation accuracy M_A."""
        return self._loader(self._ready().train_eval_set, self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        """Validation split (``val_fraction`` of the official training set)."""
        return self._loader(self._ready().val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The official test set (or the fixed test split of sets that ship without one)."""
        return self._loader(self._ready().test_set, self.eval_batch_size, shuffle=False)

    def _ready(self) -> ClassificationDataModule:
        self.setup()
        return self

    def _loader(self, dataset: ImageTensorDataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world_size = distributed_rank()
        sampler: Sampler[int] | None = None
        if shuffle:
            sampler = EpochShuffle(len(dataset), self.seed, rank, world_size)
        elif world_size > 1:
            sampler = EvalShard(len(dataset), rank, world_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) in torch.distributed's default process group; (0, 1) without one.

    Lightning's DDP strategies start the group before they ask for dataloaders, so the loaders
    built in a DDP run shard themselves (below) and Lightning leaves their samplers alone.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochShuffle(DistributedSampler):
    """A random order of ``range(n)`` that is a function of ``(seed, epoch)`` alone.

    Lightning calls ``set_epoch`` before every training epoch, so a run resumed from a checkpoint
    sees exactly the orders an uninterrupted run sees, whatever happened before. Under DDP
    (``world_size`` > 1) every rank takes every ``world_size``-th index of that same order, the
    order padded with its own first indices to a multiple of ``world_size`` (as PyTorch's
    DistributedSampler does: every rank must run the same number of training steps).

    A DistributedSampler subclass, so Lightning never wraps it in another one.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.n = n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.num_replicas == 1:
            return iter(order)
        while len(order) < self.total_size:
            order += order[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas])


class EvalShard(DistributedSampler):
    """Indices ``rank, rank + world_size, ...`` of ``range(n)``, in order and never padded.

    The ranks' shards are disjoint and together hold every index exactly once, so accuracies that
    torchmetrics sums over the ranks (validation, the training split, test) are those of the whole
    split: the same as in one process. (PyTorch's DistributedSampler pads the last shards with
    duplicates, which changes them.) Ranks may get one batch fewer than others; evaluation runs no
    collective operation per batch, so that is fine.
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=False)
        self.n = n
        self.num_samples = len(range(rank, n, world_size))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
