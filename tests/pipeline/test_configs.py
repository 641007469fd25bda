"""Every config in conf/ composes; every experiment composes with every layer."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from pipeline_utils import CONF

from fastff.config_checks import ConfigError, check_train_config
from fastff.models.layer_factory import LAYER_NAMES, layer_sizes
from fastff.tracking import resolve_wandb_mode

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [
    (group, option.stem)
    for group in GROUPS
    if group not in {"paths", "hydra"}
    for option in sorted((CONF / group).glob("*.yaml"))
]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_train_config_has_the_documented_groups():
    for group in (
        "data",
        "model",
        "layer",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "hydra",
        "experiment",
        "debug",
    ):
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


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-1", "optimizer.lr must be a number > 0"),
        ("optimizer.lr=abc", "optimizer.lr must be a number > 0"),
        ("layer.width=48", "layer.width=48 must be layer.leaf_width=16 times a power of two"),
        ("layer.leaf_width=0", "layer.leaf_width must be an integer >= 1"),
        ("layer.depth=3", "layer.width=64 disagrees with layer.leaf_width=16 and layer.depth=3"),
        ("+layer.bogus=1", "unknown setting(s) for layer=fff: ['bogus']"),
        ("trainer.precision=8", "trainer.precision must be one of"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("callbacks.early_stopping.patience=0", "callbacks.early_stopping.patience must be"),
        ("callbacks.model_checkpoint.monitor=val/ac", "callbacks.model_checkpoint.monitor must"),
        ("scheduler=plateau scheduler.factor=2", "scheduler.factor must be in (0, 1)"),
        ("logger.wandb.mode=cloud", "logger.wandb.mode must be one of"),
        ("seed=1.5", "seed must be an integer"),
    ],
)
def test_invalid_values_name_the_key(make_cfg, override, expected):
    cfg = make_cfg(*override.split())
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    assert expected in str(err.value)


def test_wandb_mode_env_overrides_config(monkeypatch):
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match="WANDB_MODE must be one of"):
        resolve_wandb_mode("offline")


def test_default_run_is_offline(make_cfg):
    cfg = make_cfg()
    assert cfg.logger.wandb.mode == "offline"
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.layer.name == "fff"
