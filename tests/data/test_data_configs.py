"""conf/data/*.yaml: one per dataset, every setting explicit, instantiable, data_dir from paths."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from datamodules import DATAMODULES
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fastff.data import ClassificationDataModule, TorchvisionDataModule

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DATA_CONFIGS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
"""One config per dataset; shared settings live in conf/data/base/ (not a choice of its own)."""


def constructor_keys(cls: type) -> set[str]:
    keys = set()
    for owner in (ClassificationDataModule, TorchvisionDataModule):
        if issubclass(cls, owner):
            params = inspect.signature(owner.__init__).parameters.values()
            keys |= {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}
    return keys - {"self"}


def test_one_config_per_registered_dataset():
    assert sorted(DATAMODULES) == DATA_CONFIGS


def composed_data_config(name: str) -> DictConfig:
    """``conf/data/<name>.yaml`` with its base configs, as ``data=<name>`` composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", "protocol=paper_flat"])
    return cfg.data


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_config_lists_every_setting_and_instantiates(tmp_path, name):
    data_cfg = composed_data_config(name)
    cls = DATAMODULES[name]
    assert data_cfg._target_ == f"{cls.__module__}.{cls.__name__}"
    assert set(data_cfg) - {"_target_"} == constructor_keys(cls)
    assert data_cfg.batch_size == 256 and data_cfg.normalization == "none"
    assert data_cfg.augment is False
    if issubclass(cls, TorchvisionDataModule):
        assert data_cfg.download is True and data_cfg.check_integrity is True

    with open_dict(data_cfg):
        data_cfg.data_dir, data_cfg.seed = "${paths.data_dir}", "${seed}"
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "seed": 7, "data": data_cfg})
    dm = instantiate(cfg.data)
    assert type(dm) is cls and dm.name == name
    assert (dm.data_dir, dm.seed, dm.batch_size) == (str(tmp_path), 7, 256)
    assert dm.hflip is cls.hflip_default and dm.affine_scale == (0.9, 1.1)
    assert not any(tmp_path.iterdir())  # constructing touches no files


def test_data_dir_follows_fastff_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFF_DATA_DIR", str(tmp_path / "datasets"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=mnist"])
    assert cfg.data.data_dir == str(tmp_path / "datasets")
    assert instantiate(cfg.data).data_dir == str(tmp_path / "datasets")
