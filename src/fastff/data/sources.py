"""The paper's six datasets on disk: which files torchvision reads, checksums, loading, download.

Every dataset lives in its own folder under the data directory, laid out as torchvision reads it:

- usps:          USPS/usps.bz2, USPS/usps.t.bz2
- mnist:         MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
- fashion_mnist: FashionMNIST/raw/ (same file names as MNIST)
- cifar10:       cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
- cifar100:      cifar-100-python/{train, test, meta}
- svhn:          SVHN/train_32x32.mat, SVHN/test_32x32.mat

Downloads go to a hidden staging folder inside the data directory and are renamed into place only
when complete, so an interrupted or failed download leaves no partial files behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets as tvd
from torchvision.datasets.utils import calculate_md5

from fastff.data.errors import DatasetError, DatasetMissingError

DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout per network operation while downloading
STAGING_PREFIX = ".fastff-download-"

Reader = Callable[[str, bool], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        path: location relative to the data directory (POSIX separators).
        split: "train", "test" or "meta" (what the file holds).
        md5: the published checksum, or None where the release publishes none for this file
            (MNIST's raw files are extracted from checksummed archives).
    """

    path: str
    split: str
    md5: str | None = None


@dataclass(frozen=True)
class TorchvisionSource:
    """How to find, verify, read and download one of torchvision's datasets.

    Attributes:
        name: fastff's dataset name (the config name, e.g. "fashion_mnist").
        root: the torchvision ``root`` argument, relative to the data directory.
        files: every file the dataset needs.
        read: (torchvision root, train?) -> (images uint8 (N, C, H, W), labels int64 (N,)).
        fetch: downloads every file into the given torchvision root with torchvision.
    """

    name: str
    root: str
    files: tuple[DataFile, ...]
    read: Reader
    fetch: Callable[[str], None]

    def folder(self, data_dir: str | os.PathLike[str]) -> Path:
        """The folder that holds this dataset's files."""
        first = Path(self.files[0].path)
        return Path(data_dir) / first.parts[0]

    def missing(self, data_dir: str | os.PathLike[str]) -> list[Path]:
        """The dataset's files that are not on disk (empty when complete)."""
        return [
            Path(data_dir) / f.path for f in self.files if not (Path(data_dir) / f.path).is_file()
        ]

    def verify_checksums(self, data_dir: str | os.PathLike[str]) -> None:
        """Raise DatasetError naming the first file whose md5 differs from the published one."""
        for f in self.files:
            if f.md5 is None:
                continue
            path = Path(data_dir) / f.path
            actual = calculate_md5(path)
            if actual != f.md5:
                raise DatasetError(
                    f"dataset {self.name!r}: checksum mismatch for {path} (md5 {actual}, expected "
                    f"{f.md5}): the file is truncated, corrupt or not the official release. Delete "
                    f"{self.folder(data_dir)} and download it again with `python -m "
                    f"fastff.data.fetch --datasets {self.name}`; for files you made or converted "
                    "yourself, set data.check_integrity=false."
                )

    def load(
        self, data_dir: str | os.PathLike[str], train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) uint8 and labels (N,) int64 of the train or test set.

        Raises:
            DatasetError: when torchvision cannot read the files.
        """
        try:
            images, labels = self.read(str(Path(data_dir) / self.root), train)
        except Exception as error:
            split = "train" if train else "test"
            paths = ", ".join(
                str(Path(data_dir) / f.path) for f in self.files if f.split in (split, "meta")
            )
            raise DatasetError(
                f"cannot read dataset {self.name!r} ({split} set) from {paths}: "
                f"{type(error).__name__}: {one_line(str(error))}. The files are truncated, "
                "corrupt or not in torchvision's format: delete "
                f"{self.folder(data_dir)} and download it again with "
                f"`python -m fastff.data.fetch --datasets {self.name}`, or copy intact files there."
            ) from error
        return images.contiguous(), labels.to(torch.int64)


def how_to_get(source: TorchvisionSource, data_dir: str | os.PathLike[str]) -> str:
    """The instructions appended to every missing-data error."""
    return (
        f'To get the files, run `make data ARGS="--datasets {source.name}"` (or `python -m '
        f"fastff.data.fetch --datasets {source.name} --data-dir {data_dir}`) on a machine with "
        f"internet access, or copy the files into {source.folder(data_dir)} (layout in "
        "fastff.data.sources); or point paths.data_dir (or FASTFF_DATA_DIR) at a folder with them."
    )


def missing_error(
    source: TorchvisionSource, data_dir: str | os.PathLike[str], missing: list[Path], reason: str
) -> DatasetMissingError:
    """One clear error for a dataset that is not on disk: what, where, why, and how to fix it."""
    shown = ", ".join(str(p.relative_to(data_dir)) for p in missing[:4])
    more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
    return DatasetMissingError(
        f"dataset {source.name!r} not found in {data_dir} (missing {shown}{more}); {reason}. "
        + how_to_get(source, data_dir)
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every blocking socket operation (torchvision's urllib calls set no timeout)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download(
    source: TorchvisionSource,
    data_dir: str | os.PathLike[str],
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> None:
    """Download ``source`` into ``data_dir`` unless all its files are there.

    torchvision downloads into a staging folder inside ``data_dir``; the files are renamed into
    place only after every one arrived (and passed torchvision's checksum), and the staging folder
    (with archives and any partial file) is removed whatever happens.

    Raises:
        DatasetMissingError: the download failed (no network, timeout, bad checksum, ...).
    """
    data_dir = Path(data_dir)
    if not source.missing(data_dir):
        return
    created = _missing_folders(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{source.name}-", dir=data_dir))
    except OSError as error:
        _remove_if_empty(created)
        raise missing_error(
            source,
            data_dir,
            source.missing(data_dir),
            f"cannot write to the data directory ({error})",
        ) from error
    try:
        with _socket_timeout(timeout_s):
            source.fetch(str(staging / source.root))
        not_fetched = [f.path for f in source.files if not (staging / f.path).is_file()]
        if not_fetched:
            raise DatasetError(f"the download did not produce {', '.join(not_fetched)}")
        for f in source.files:
            target = data_dir / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f.path, target)
    except Exception as error:
        reason = f"downloading failed ({type(error).__name__}: {one_line(str(error))})"
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(created)
        raise missing_error(source, data_dir, source.missing(data_dir), reason) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created (innermost first) while they are empty."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:
            return


# -- torchvision readers ------------------------------------------------------------------------


def _without_checksums(cls: type) -> type:
    """A subclass of a torchvision dataset that only checks that its files exist.

    fastff verifies checksums itself (``TorchvisionSource.verify_checksums``) when
    ``check_integrity`` is on, so the published md5 is computed once and user-made files load.
    """
    attrs: dict[str, object] = {"__module__": __name__}
    if hasattr(cls, "train_list"):  # CIFAR10, CIFAR100
        attrs["train_list"] = [[name, None] for name, _ in cls.train_list]
        attrs["test_list"] = [[name, None] for name, _ in cls.test_list]
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):  # SVHN
        attrs["split_list"] = {k: [url, name, None] for k, (url, name, _) in cls.split_list.items()}
    return type(f"{cls.__name__}FilesOnly", (cls,), attrs)


_CIFAR10 = _without_checksums(tvd.CIFAR10)
_CIFAR100 = _without_checksums(tvd.CIFAR100)
_SVHN = _without_checksums(tvd.SVHN)


def _read_idx(cls: type) -> Reader:
    def read(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = cls(root, train=train, download=False)
        return ds.data.unsqueeze(1), ds.targets

    return read


def _read_cifar(cls: type) -> Reader:
    def read(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = cls(root, train=train, download=False)
        # torchvision's HWC array is a view of the files' CHW rows: undo the view, copy nothing.
        images = torch.from_numpy(ds.data.transpose(0, 3, 1, 2))
        return images, torch.as_tensor(ds.targets)

    return read


def _read_svhn(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ds = _SVHN(root, split="train" if train else "test", download=False)
    return torch.from_numpy(ds.data), torch.from_numpy(ds.labels)


def _read_usps(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ds = tvd.USPS(root, train=train, download=False)
    return torch.from_numpy(ds.data).unsqueeze(1), torch.as_tensor(ds.targets)


def _fetch_train_flag(cls: type) -> Callable[[str], None]:
    def fetch(root: str) -> None:
        for train in (True, False):
            cls(root, train=train, download=True)

    return fetch


def _fetch_svhn(root: str) -> None:
    for split in ("train", "test"):
        tvd.SVHN(root, split=split, download=True)


def _idx_files(folder: str) -> tuple[DataFile, ...]:
    return tuple(
        DataFile(f"{folder}/raw/{prefix}-{kind}", split)
        for prefix, split in (("train", "train"), ("t10k", "test"))
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )


def _cifar_files(cls: type) -> tuple[DataFile, ...]:
    return (
        *(DataFile(f"{cls.base_folder}/{n}", "train", md5) for n, md5 in cls.train_list),
        *(DataFile(f"{cls.base_folder}/{n}", "test", md5) for n, md5 in cls.test_list),
        DataFile(f"{cls.base_folder}/{cls.meta['filename']}", "meta", cls.meta["md5"]),
    )


def _split_list_files(folder: str, split_list: dict[str, list[str]]) -> tuple[DataFile, ...]:
    return tuple(
        DataFile(f"{folder}/{split_list[split][1]}", split, split_list[split][2])
        for split in ("train", "test")
    )


SOURCES: dict[str, TorchvisionSource] = {
    "usps": TorchvisionSource(
        "usps",
        "USPS",
        _split_list_files("USPS", tvd.USPS.split_list),
        _read_usps,
        _fetch_train_flag(tvd.USPS),
    ),
    "mnist": TorchvisionSource(
        "mnist", "", _idx_files("MNIST"), _read_idx(tvd.MNIST), _fetch_train_flag(tvd.MNIST)
    ),
    "fashion_mnist": TorchvisionSource(
        "fashion_mnist",
        "",
        _idx_files("FashionMNIST"),
        _read_idx(tvd.FashionMNIST),
        _fetch_train_flag(tvd.FashionMNIST),
    ),
    "cifar10": TorchvisionSource(
        "cifar10",
        "",
        _cifar_files(tvd.CIFAR10),
        _read_cifar(_CIFAR10),
        _fetch_train_flag(tvd.CIFAR10),
    ),
    "cifar100": TorchvisionSource(
        "cifar100",
        "",
        _cifar_files(tvd.CIFAR100),
        _read_cifar(_CIFAR100),
        _fetch_train_flag(tvd.CIFAR100),
    ),
    "svhn": TorchvisionSource(
        "svhn", "SVHN", _split_list_files("SVHN", tvd.SVHN.split_list), _read_svhn, _fetch_svhn
    ),
}
