"""Tiny datasets written in exactly the on-disk formats torchvision reads.

Imported by the tests beside it. ``write_fake_dataset(name, data_dir)`` writes a small train and
test set of one of the paper's six datasets where torchvision (and fastff) look for it, and returns
the images and labels it wrote, as fastff should load them: images uint8 (N, C, H, W), labels
int64 (N,).
"""

from __future__ import annotations

import bz2
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

TORCHVISION_SETS = ("usps", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")
N_TRAIN = 60
N_TEST = 20
SHAPES = {
    "usps": (1, 16, 16),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
}
NUM_CLASSES = {name: 100 if name == "cifar100" else 10 for name in TORCHVISION_SETS}

Split = tuple[np.ndarray, np.ndarray]


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    if name == "usps":
        # USPS stores pixels in [-1, 1] as text; k/4 - 1 maps exactly to floor(k * 255 / 8).
        return (rng.integers(0, 9, size=(n, *shape)) * 255 // 8).astype(np.uint8)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, num_classes: int, offset: int) -> np.ndarray:
    return ((np.arange(n) * 7 + offset) % num_classes).astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX (MNIST) file: magic 0x0000 08 <ndim>, big-endian int32 sizes, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist(folder: Path, train: Split, test: Split) -> None:
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(folder / "raw" / f"{prefix}-images-idx3-ubyte", images[:, 0])
        write_idx(folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def _cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: str) -> dict:
    # Rows of 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
    return {
        "batch_label": "fake batch",
        "data": images.reshape(images.shape[0], -1),
        label_key: labels.tolist(),
        "filenames": [f"img_{i}.png" for i in range(images.shape[0])],
    }


def _write_cifar10(folder: Path, train: Split, test: Split) -> None:
    for i, part in enumerate(np.array_split(np.arange(len(train[1])), 5), start=1):
        _pickle(folder / f"data_batch_{i}", _cifar_batch(train[0][part], train[1][part], "labels"))
    _pickle(folder / "test_batch", _cifar_batch(*test, "labels"))
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})


def _write_cifar100(folder: Path, train: Split, test: Split) -> None:
    for file_name, (images, labels) in (("train", train), ("test", test)):
        batch = _cifar_batch(images, labels, "fine_labels")
        batch["coarse_labels"] = (labels // 5).tolist()
        _pickle(folder / file_name, batch)
    meta = {
        "fine_label_names": [f"class_{i}" for i in range(100)],
        "coarse_label_names": [f"super_{i}" for i in range(20)],
    }
    _pickle(folder / "meta", meta)


def _write_svhn(folder: Path, train: Split, test: Split) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (images, labels) in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        # The .mat files hold X as (H, W, C, N) and y as (N, 1) with label 10 for the digit 0.
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(folder / file_name, {"X": images.transpose(2, 3, 1, 0), "y": y})


def _write_usps(folder: Path, train: Split, test: Split) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (images, labels) in (("usps.bz2", train), ("usps.t.bz2", test)):
        # libsvm lines: "<label 1..10> 1:<v> ... 256:<v>" with pixels v in [-1, 1].
        steps = np.rint(images.reshape(len(labels), -1).astype(float) * 8 / 255).astype(int)
        lines = [
            f"{label + 1} " + " ".join(f"{j}:{k / 4 - 1:.6f}" for j, k in enumerate(row, start=1))
            for row, label in zip(steps, labels, strict=True)
        ]
        with bz2.open(folder / file_name, "wt") as file:
            file.write("\n".join(lines) + "\n")


_WRITERS: dict[str, tuple[str, Callable[[Path, Split, Split], None]]] = {
    "usps": ("USPS", _write_usps),
    "mnist": ("MNIST", _write_mnist),
    "fashion_mnist": ("FashionMNIST", _write_mnist),
    "cifar10": ("cifar-10-batches-py", _write_cifar10),
    "cifar100": ("cifar-100-python", _write_cifar100),
    "svhn": ("SVHN", _write_svhn),
}


def write_fake_dataset(
    name: str, data_dir: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0
) -> dict[str, Split]:
    """Write a tiny ``name`` dataset under ``data_dir``; return {"train": ..., "test": ...}."""
    rng = np.random.default_rng(seed)
    shape, classes = SHAPES[name], NUM_CLASSES[name]
    train = (_images(rng, n_train, shape, name), _labels(n_train, classes, 0))
    test = (_images(rng, n_test, shape, name), _labels(n_test, classes, 3))
    folder, writer = _WRITERS[name]
    writer(Path(data_dir) / folder, train, test)
    return {"train": train, "test": test}


def files_under(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative, sorted), hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))
