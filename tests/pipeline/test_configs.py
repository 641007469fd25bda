"""Every config in conf/ composes and instantiates: datamodule, model, module and trainer."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from pipeline_utils import CONF

from fastff.config_checks import ConfigError, check_train_config
from fastff.layers import FF, FFF, MoE
from fastff.models import LAYER_CLASSES
from fastff.tracking import resolve_wandb_mode
from fastff.training.assembly import build_run, build_trainer

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [
    (group, option.stem)
    for group in GROUPS
    # experiment_layer options are chosen by experiment=... (tested below), never on their own.
    if group not in {"paths", "hydra", "experiment_layer"}
    for option in sorted((CONF / group).glob("*.yaml"))
]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
PAPER_FLAT_SETS = ("usps", "mnist", "fashion_mnist", "mnist5k", "svhn", "cifar10", "cifar100")


def instantiate_run(cfg, *, trainer: bool = True):
    """What ``train()`` builds before fitting, with train()'s own steps: the checks, then the
    datamodule, model and module (``build_run``) and the trainer (``build_trainer``)."""
    check_train_config(cfg)
    data, model, module = build_run(cfg)
    return data, model, module, build_trainer(cfg, model) if trainer else None


def test_train_config_has_the_documented_groups():
    for group in (
        "data",
        "model",
        "layer",
        "optimizer",
        "scheduler",
        "protocol",
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
def test_every_option_instantiates(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    OmegaConf.resolve(cfg)
    # A GPU trainer can only be built where CUDA exists; everything else is built regardless.
    needs_cuda = cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available()
    data, model, module, trainer = instantiate_run(cfg, trainer=not needs_cuda)
    logits = model.eval()(torch.zeros(2, *data.input_shape))
    assert logits.shape == (2, data.num_classes)
    assert module.configure_optimizers() is not None
    if trainer is not None and not cfg.trainer.fast_dev_run:
        assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("layer", sorted(LAYER_CLASSES))
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_instantiates_with_every_layer(make_cfg, experiment, layer):
    cfg = make_cfg(f"experiment={experiment}", f"layer={layer}")
    _, model, _, _ = instantiate_run(cfg)
    assert any(isinstance(m, LAYER_CLASSES[layer]) for m in model.modules())  # flat net or ViT


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("layer", sorted(LAYER_CLASSES))
def test_every_dataset_instantiates_with_every_layer(make_cfg, data, layer):
    _, model, module, _ = instantiate_run(make_cfg(f"data={data}", f"layer={layer}"))
    assert isinstance(model.layer, (FFF, FF, MoE))
    assert module.configure_optimizers() is not None


def test_entry_point_configs_compose(make_cfg):
    assert make_cfg("ckpt_path=x.ckpt", name="eval").task_name == "eval"
    assert make_cfg(name="bench").task_name == "bench"


def test_default_run_settings(make_cfg):
    cfg = make_cfg()
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.01
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 40
    assert cfg.layer._target_.endswith("layer_builders.fff")
    assert cfg.logger.wandb.mode == "offline"


@pytest.mark.parametrize("data", PAPER_FLAT_SETS)
def test_data_override_alone_selects_the_paper_protocol(make_cfg, data):
    cfg = make_cfg(f"data={data}")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.2
    assert cfg.data.batch_size == 256 and cfg.data.normalization == "none"
    assert cfg.layer.hardening == 3.0


def test_protocol_can_be_chosen_explicitly(make_cfg):
    cfg = make_cfg("data=cifar10", "protocol=digits")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.data.batch_size == 64
    cfg = make_cfg("data=mnist", "optimizer=adam", "optimizer.lr=0.001")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.001


def test_table1_protocol_settings(make_cfg):
    cfg = make_cfg("experiment=table1")
    assert cfg.data._target_.endswith("MNISTDataModule")
    assert cfg.data.batch_size == 256
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.optimizer.lr == 0.2
    assert cfg.layer.hardening == 3.0 and cfg.layer.width == 128
    assert cfg.data.normalization == "none"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-1", "optimizer.lr must be a number in (0, inf)"),
        ("optimizer.lr=abc", "optimizer.lr must be a number in (0, inf)"),
        ("optimizer.lr=nan", "optimizer.lr must be a number in (0, inf)"),
        ("layer.width=48", "layer.width=48 must be layer.leaf_width=16 times a power of two"),
        ("layer.leaf_width=0", "layer.leaf_width must be an integer >= 1"),
        ("layer.depth=3", "layer.width=64 disagrees with layer.leaf_width=16 and layer.depth=3"),
        ("+layer.bogus=1", "layer.bogus: unknown setting for layer=fff (allowed: activation, "),
        (
            "+layer.leaf_widht=3",
            "layer.leaf_widht: unknown setting for layer=fff; did you mean leaf_width?",
        ),
        ("+layer.hidden_width=3", "layer.hidden_width: unknown setting for layer=fff"),
        ("layer.activation=nonsense", "layer.activation must be"),
        ("layer.region_leak=1.5", "layer.region_leak must be a number in [0, 1]"),
        ("layer=moe layer.k=5", "layer.k must be"),
        ("layer=ff +layer.leaf_width=2", "layer.leaf_width: unknown setting for layer=ff"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("callbacks.early_stopping.patience=0", "callbacks.early_stopping.patience must be"),
        ("callbacks.model_checkpoint.monitor=val/ac", "callbacks.model_checkpoint.monitor must"),
        (
            "scheduler=plateau scheduler.scheduler.factor=2",
            "scheduler.scheduler.factor must be a number in (0, 1)",
        ),
        ("scheduler=plateau scheduler.monitor=acc", "scheduler.monitor must be one of"),
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
