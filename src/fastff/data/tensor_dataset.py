"""An in-memory image dataset that hands the DataLoader whole batches, not single samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

Batch = tuple[torch.Tensor, torch.Tensor]


class ImageTensorDataset(Dataset):
    """Raw images and labels held as tensors; scaling and normalisation happen per batch.

    The DataLoader fetches a batch through ``__getitems__`` (one tensor indexing, one vectorised
    normalisation), so nothing is done per sample unless augmentation is on. Build the loader with
    ``collate_fn=collate_batch``.

    Args:
        images: (N, C, H, W) raw pixel values (uint8 keeps memory low).
        labels: (N,) int64 class indices.
        pixel_max: the raw value that maps to 1.0.
        mean: (C,) subtracted after scaling to [0, 1].
        std: (C,) divisor after subtracting the mean.
        augment: optional transform of one (C, H, W) image in [0, 1], applied before normalising.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        pixel_max: float,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.pixel_max = float(pixel_max)
        self.mean = mean.reshape(1, -1, 1, 1).float()
        self.std = std.reshape(1, -1, 1, 1).float()
        self.augment = augment

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Images float32 (B, C, H, W) and labels int64 (B,) for ``indices``."""
        return self._batch(torch.as_tensor(indices, dtype=torch.long))

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Batch:
        """One image (C, H, W) and its 0-dim label for an int; a batch for a slice or indices."""
        if isinstance(index, slice):
            return self._batch(index)
        index = torch.as_tensor(index, dtype=torch.long)
        if index.dim() == 0:
            x, y = self._batch(index.reshape(1))
            return x[0], y[0]
        return self._batch(index)

    def _batch(self, index: torch.Tensor | slice) -> Batch:
        x = self.images[index].to(torch.float32) / self.pixel_max
        if self.augment is not None:
            x = torch.stack([self.augment(image) for image in x])
        return (x - self.mean) / self.std, self.labels[index]


def collate_batch(batch: Batch) -> Batch:
    """``collate_fn`` for ``ImageTensorDataset``: its ``__getitems__`` already built the batch."""
    return batch
