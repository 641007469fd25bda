"""Missing, undownloadable, truncated and corrupt data: clear errors, fast, no partial files."""

from __future__ import annotations

import dataclasses
import socket
import time
import urllib.error
from pathlib import Path

import pytest
from datamodules import DATAMODULES
from fake_datasets import N_TEST, TORCHVISION_SETS, files_under, write_fake_dataset

from fastff.data import DatasetError, DatasetMissingError
from fastff.data import fetch as fetch_cli
from fastff.data.sources import DOWNLOAD_TIMEOUT_S, SOURCES

TRAIN_FILE = {
    "usps": "USPS/usps.bz2",
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "fashion_mnist": "FashionMNIST/raw/train-labels-idx1-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_2",
    "cifar100": "cifar-100-python/train",
    "svhn": "SVHN/train_32x32.mat",
}


def with_fetch(monkeypatch, name, fetch):
    """Make dataset ``name`` download with ``fetch(torchvision_root)`` instead of the network."""
    source = dataclasses.replace(SOURCES[name], fetch=fetch)
    monkeypatch.setitem(SOURCES, name, source)
    monkeypatch.setattr(DATAMODULES[name], "source", source)
    return source


def staged_data_dir(name: str, root: str) -> Path:
    """The data directory a fetch writes into, given the torchvision root it receives."""
    return Path(root).parent if SOURCES[name].root else Path(root)


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_missing_data_without_download_is_one_clear_fast_error(tmp_path, name):
    dm = DATAMODULES[name](data_dir=str(tmp_path), download=False)
    start = time.perf_counter()
    with pytest.raises(DatasetMissingError) as info:
        dm.prepare_data()
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert f"dataset {name!r} not found in {tmp_path}" in message
    assert "data.download=false" in message
    assert f"python -m fastff.data.fetch --datasets {name}" in message
    assert "make data" in message
    assert files_under(tmp_path) == []


def test_setup_without_files_names_prepare_data(tmp_path):
    dm = DATAMODULES["svhn"](data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetMissingError, match=r"missing SVHN/train_32x32.mat, SVHN/test_32x32"):
        dm.setup("fit")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", ["mnist", "usps"])
def test_failed_download_leaves_no_partial_files(tmp_path, monkeypatch, name):
    seen_timeouts = []

    def failing_fetch(root):
        seen_timeouts.append(socket.getdefaulttimeout())
        partial = staged_data_dir(name, root) / TRAIN_FILE[name]
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"\x00\x00\x08")  # a few bytes, then the connection drops
        raise urllib.error.URLError("Name or service not known")

    with_fetch(monkeypatch, name, failing_fetch)
    data_dir = tmp_path / "data"
    dm = DATAMODULES[name](data_dir=str(data_dir), download=True)
    with pytest.raises(DatasetMissingError, match=r"downloading failed \(URLError") as info:
        dm.prepare_data()
    assert f"python -m fastff.data.fetch --datasets {name}" in str(info.value)
    assert files_under(data_dir) == []
    # The network is bounded by a socket timeout while downloading, and only then.
    assert seen_timeouts == [DOWNLOAD_TIMEOUT_S]
    assert socket.getdefaulttimeout() is None


def test_failed_download_is_one_line_and_leaves_no_new_data_folder(tmp_path, monkeypatch):
    def failing_fetch(root):
        # torchvision's MNIST joins the errors of its mirrors over several lines
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\nTried http://b/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\n"
        )

    with_fetch(monkeypatch, "mnist", failing_fetch)
    with_fetch(monkeypatch, "usps", failing_fetch)
    data_dir = tmp_path / "new" / "data"
    dm = DATAMODULES["mnist"](data_dir=str(data_dir), download=True)
    with pytest.raises(DatasetMissingError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "\n" not in message
    assert "got: <urlopen error [Errno -2] Name or service not known> Tried http://b/" in message
    assert not (tmp_path / "new").exists()
    # a data directory that was there before stays
    (tmp_path / "kept").mkdir()
    assert fetch_cli.main(["--datasets", "mnist", "--data-dir", str(tmp_path / "kept")]) == 1
    assert (tmp_path / "kept").is_dir() and files_under(tmp_path / "kept") == []
    assert fetch_cli.main(["--datasets", "mnist", "usps", "--data-dir", str(data_dir)]) == 1
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["mnist", "svhn"])
def test_download_is_renamed_into_place_when_complete(tmp_path, monkeypatch, name):
    def fetch(root):
        staged = staged_data_dir(name, root)
        write_fake_dataset(name, staged)
        (staged / "archive.tar.gz").write_bytes(b"downloaded archive")

    with_fetch(monkeypatch, name, fetch)
    dm = DATAMODULES[name](data_dir=str(tmp_path), download=True, check_integrity=False)
    dm.prepare_data()
    expected = sorted(str(Path(f.path)) for f in SOURCES[name].files)
    assert [p for p in files_under(tmp_path) if (tmp_path / p).is_file()] == expected
    dm.setup("test")
    assert len(dm.test_set) == N_TEST


def test_present_files_are_not_downloaded_again(tmp_path, monkeypatch):
    write_fake_dataset("cifar100", tmp_path)

    def fetch(root):
        raise AssertionError("must not download when the files are there")

    with_fetch(monkeypatch, "cifar100", fetch)
    DATAMODULES["cifar100"](data_dir=str(tmp_path), download=True).prepare_data()


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_truncated_file_is_a_clear_error(tmp_path, name):
    write_fake_dataset(name, tmp_path)
    path = tmp_path / TRAIN_FILE[name]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    dm = DATAMODULES[name](data_dir=str(tmp_path), download=False, check_integrity=False)
    with pytest.raises(DatasetError, match="truncated, corrupt") as info:
        dm.setup("fit")
    message = str(info.value)
    assert f"cannot read dataset {name!r} (train set)" in message
    assert str(path) in message
    assert f"python -m fastff.data.fetch --datasets {name}" in message


def test_fetch_cli_reports_failures(tmp_path, monkeypatch, capsys):
    def failing_fetch(root):
        raise urllib.error.URLError("no network")

    with_fetch(monkeypatch, "mnist", failing_fetch)
    assert fetch_cli.main(["--datasets", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mnist: FAILED: dataset 'mnist' not found" in err and "no network" in err
    assert files_under(tmp_path) == []


def test_fetch_cli_checks_present_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTFF_DATA_DIR", str(tmp_path))
    write_fake_dataset("mnist", tmp_path)
    write_fake_dataset("cifar10", tmp_path)
    assert fetch_cli.main(["--datasets", "mnist"]) == 0
    assert f"mnist: already present in {tmp_path / 'MNIST'}" in capsys.readouterr().out
    # Home-made CIFAR files do not match the published checksums.
    assert fetch_cli.main(["--datasets", "cifar10"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert fetch_cli.main(["--datasets", "cifar10", "--no-check-integrity"]) == 0


def test_fetch_cli_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as info:
        fetch_cli.main(["--datasets", "imagenet"])
    assert info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
