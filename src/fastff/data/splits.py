"""Seeded index splits: the paper's 9:1 train/validation split and fixed test splits."""

from __future__ import annotations

import torch

# Seed of the fixed train/test split of the offline sets that ship without one (digits, mnist5k).
# It is independent of the run seed, so every run of such a set is scored on the same test images.
# 2308 is the year-month of the paper's arXiv number (2308.14711).
OFFLINE_TEST_SPLIT_SEED = 2308
# Fraction of those sets held out as the test set (stratified by class).
OFFLINE_TEST_FRACTION = 0.2


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..n-1 at random into (train, validation); the same seed gives the same split.

    The validation part has round(n * val_fraction) indices (at least 1, at most n - 1).

    Returns:
        (train_indices, val_indices), int64 tensors, each sorted ascending.
    """
    if n < 2:
        raise ValueError(f"need at least 2 training examples to split off validation, got {n}")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def stratified_test_split(
    labels: torch.Tensor,
    test_fraction: float = OFFLINE_TEST_FRACTION,
    seed: int = OFFLINE_TEST_SPLIT_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, test), keeping class proportions (stratified).

    Args:
        labels: (N,) class indices.

    Returns:
        (train_indices, test_indices), int64 tensors, each sorted ascending.
    """
    from sklearn.model_selection import train_test_split  # 0.3 s to import: when used

    train, test = train_test_split(
        torch.arange(labels.shape[0]).numpy(),
        test_size=test_fraction,
        random_state=seed,
        stratify=labels.numpy(),
    )
    return torch.as_tensor(train).sort().values, torch.as_tensor(test).sort().values
