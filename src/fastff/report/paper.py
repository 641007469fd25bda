"""The paper's numbers (CSV files in ``fastff/report/paper/``, see its README) and which of the
paper's data sets each of ours is compared with."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd

PAPER_FILES = ("table1", "table2", "table3", "speed")
INTEGER_COLUMNS = (
    "leaf_width",
    "training_width",
    "depth",
    "inference_width",
    "inference_size",
    "ETT_M",
    "ETT_G",
)
PAPER_NAMES = {
    "usps": "USPS",
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
}
"""The paper's names of its data sets, by fastff's dataset name."""
STAND_INS = {"table1": {"mnist5k": ("mnist", "MNIST, full set")}}
"""Our smaller data sets that stand in for one of the paper's in a table: (paper dataset,
label)."""
TABLE_DATASETS = {"table2": "cifar10", "table3": "cifar10"}
"""Tables the paper ran on one data set: our datasets are compared with it (labelled as a
different data set), except those in ``NOT_COMPARED``."""
NOT_COMPARED = frozenset({"digits"})
"""Datasets too far from the paper's for any paper column (8x8 digits)."""


@cache
def load(name: str) -> pd.DataFrame:
    """The paper's numbers ``paper/<name>.csv`` (``name`` in ``PAPER_FILES``); size columns as
    nullable integers (the FF rows have no leaf width)."""
    if name not in PAPER_FILES:
        raise ValueError(f"no paper file {name!r}; there are {list(PAPER_FILES)}")
    text = resources.files("fastff.report").joinpath("paper", f"{name}.csv").read_text()
    frame = pd.read_csv(io.StringIO(text))
    for column in INTEGER_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


@dataclass(frozen=True)
class Reference:
    """What a table of ours on one dataset is compared with.

    Attributes:
        dataset: the paper's dataset (fastff name) whose numbers stand beside ours; None when the
            paper has none for this table and dataset.
        label: the paper column's label, e.g. ``"paper"`` or ``"paper (MNIST, full set)"``.
        same: whether it is our dataset (otherwise only trends compare).
    """

    dataset: str | None
    label: str
    same: bool


def reference(table: str, dataset: str) -> Reference:
    """The paper's numbers for ``table`` beside our runs on ``dataset``: the same data set, a
    stand-in (mnist5k for MNIST in Table 1; Tables 2 and 3 are CIFAR10 only) or none (digits,
    Figure 2)."""
    if dataset in NOT_COMPARED:
        return Reference(None, "", False)
    if table == "table1":
        if dataset in PAPER_NAMES and dataset != "cifar10":
            return Reference(dataset, "paper", True)
        if dataset in STAND_INS["table1"]:
            paper_dataset, label = STAND_INS["table1"][dataset]
            return Reference(paper_dataset, f"paper ({label})", False)
        return Reference(None, "", False)
    if table in TABLE_DATASETS:
        paper_dataset = TABLE_DATASETS[table]
        if dataset == paper_dataset:
            return Reference(paper_dataset, "paper", True)
        return Reference(paper_dataset, f"paper ({PAPER_NAMES[paper_dataset]})", False)
    return Reference(None, "", False)


def numbers(table: str, ref: Reference) -> pd.DataFrame:
    """The paper's rows of ``table`` for ``ref.dataset`` (empty when there are none)."""
    frame = load(table)
    if ref.dataset is None:
        return frame.iloc[0:0]
    return frame[frame["dataset"] == ref.dataset].reset_index(drop=True)
