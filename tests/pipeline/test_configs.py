"""Every config in conf/ composes; every experiment composes with every layer."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fastff.config_checks import check_train_config
from fastff.models.layer_factory import LAYER_NAMES, layer_sizes

from pipeline_utils import CONF

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [
    (group, option.stem)
    for group in GROUPS
    if group not in {"paths", "hydra"}
    for option in sorted((CONF / group).glob("*.yaml"))
]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_train_config_has_the_documented_groups():
    for group in ("data", "model", "layer", "trainer", "logger", "callbacks", "paths", "hydra",
                  "experiment", "debug"):
        assert group in GROUPS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    OmegaConf.resolve(cfg)
    check_train_config(cfg)


@pytest.mark.parametrize("layer", LAYER_NAMES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_layer(make_cfg, experiment, layer):
    cfg = make_cfg(f"experiment={experiment}", f"layer={layer}")
    OmegaConf.resolve(cfg)
    check_train_config(cfg)
    assert cfg.layer.name == layer
    assert layer_sizes(cfg.layer)["training_width"] >= 1


@pytest.mark.parametrize("name", ["eval", "bench"])
def test_other_entry_point_configs_compose(make_cfg, name):
    if not (CONF / f"{name}.yaml").exists():
        pytest.skip(f"conf/{name}.yaml not present")
    cfg = make_cfg(*(["ckpt_path=x.ckpt"] if name == "eval" else []), name=name)
    assert cfg.task_name == name


def test_table1_protocol_settings(make_cfg):
    cfg = make_cfg("experiment=table1")
    assert cfg.data.batch_size == 256
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.optimizer.lr == 0.2
    assert cfg.layer.hardening == 3.0
    assert cfg.data.normalization == "none"
