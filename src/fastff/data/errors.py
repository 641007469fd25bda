"""Errors for datasets that are missing, corrupt or not what the datamodule expects."""

from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset's files cannot be used: corrupt, truncated, wrong checksum or wrong content."""


class DatasetMissingError(DatasetError):
    """A dataset's files are not on disk and could not be downloaded."""
