"""A checkpoint's recorded config may name only fastff's own builders (fastff.registry), checked
before anything is imported or instantiated; wrong-shaped tensors are one clear line. In process
(load_model); the command lines are in test_user_errors.py."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from pipeline_utils import CONF, compose_config

from crafted_checkpoints import (
    FOREIGN_MESSAGES,
    fastff_checkpoint,
    foreign_changes,
    run_of,
    write_variant,
)
from fastff import registry
from fastff.registry import ForeignTargetError, check_recorded_config
from fastff.training.checkpoint import load_model


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return fastff_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _yaml_targets(node, key=""):
    """Every (key, _target_ value) in a parsed YAML file: an independent walk of conf/."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "_target_":
                yield key, value
            else:
                yield from _yaml_targets(value, f"{key}.{name}")
    elif isinstance(node, list):
        for value in node:
            yield from _yaml_targets(value, key)


def test_every_target_in_conf_is_allowed_where_it_is_used():
    """Each conf/<group>/*.yaml's _target_ is one of that group's kinds; every _target_ under
    conf/ (any file, any depth) is one a sweep trial may name."""
    for group in registry.RECORDED_GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            top = yaml.safe_load(path.read_text())["_target_"]
            assert registry.kinds(group)[path.stem] == top
    every = {
        v for p in CONF.rglob("*.yaml") for _, v in _yaml_targets(yaml.safe_load(p.read_text()))
    }
    assert "fastff.models.layer_builders.fff" in every and len(every) > 15
    assert every <= registry.conf_targets()


@pytest.mark.parametrize(
    ("data", "model", "layer"),
    list(itertools.product(_options("data"), _options("model"), _options("layer"))),
)
def test_every_composed_run_config_passes(tmp_path: Path, data, model, layer):
    """What fastff.train records for every dataset x model x layer passes the allow-list."""
    cfg = compose_config("train", [f"data={data}", f"model={model}", f"layer={layer}"], tmp_path)
    check_recorded_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_named_activation_class_passes(tmp_path: Path):
    cfg = compose_config(
        "train", ["+layer.activation={_target_:torch.nn.GELU,_partial_:true}"], tmp_path
    )
    check_recorded_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_genuine_checkpoint_loads(base_ckpt, tmp_path: Path):
    path = write_variant(base_ckpt, tmp_path / "ok.ckpt", lambda c: None)
    model = load_model(path)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    assert state.keys() == base_ckpt["state_dict"].keys()
    for key, value in state.items():
        torch.testing.assert_close(value, base_ckpt["state_dict"][key], rtol=0, atol=0)


FOREIGN = {
    **FOREIGN_MESSAGES,
    "num_classes": "num_classes must be a positive integer",
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_foreign_targets_are_refused_before_anything_runs(base_ckpt, tmp_path: Path, case):
    marker = tmp_path / "marker"
    change = foreign_changes(marker)[case]
    path = write_variant(base_ckpt, tmp_path / f"{case}.ckpt", change)
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith("ckpt_path: ") and "\n" not in message
    assert FOREIGN[case] in message, message
    if case != "num_classes":
        assert isinstance(caught.value, ForeignTargetError)
        assert "refused before importing anything" in message
    assert not marker.exists()


def test_a_target_of_another_group_is_refused(base_ckpt, tmp_path: Path):
    """Each group names only its own kinds: a data module is no layer."""

    def swap(c):
        run_of(c)["layer"]["_target_"] = "fastff.data.digits.DigitsDataModule"

    with pytest.raises(ForeignTargetError, match=r"layer\._target_=.fastff\.data\.digits"):
        load_model(write_variant(base_ckpt, tmp_path / "swap.ckpt", swap))


def test_wrong_shaped_tensors_are_one_line(base_ckpt, tmp_path: Path):
    def shrink(c):
        c["state_dict"]["model.layer.w1s"] = torch.zeros(3, 5)

    with pytest.raises(ValueError) as caught:
        load_model(write_variant(base_ckpt, tmp_path / "shape.ckpt", shrink))
    expected = tuple(base_ckpt["state_dict"]["model.layer.w1s"].shape)
    assert str(caught.value) == (
        f"ckpt_path: the checkpoint's tensor model.layer.w1s has shape (3, 5), but the model "
        f"built from the config needs {expected}; the weights do not belong to that config"
    )


def test_a_missing_or_extra_tensor_is_one_line(base_ckpt, tmp_path: Path):
    def drop(c):
        del c["state_dict"]["model.layer.b2s"]

    def add(c):
        c["state_dict"]["model.layer.extra"] = torch.zeros(1)

    with pytest.raises(ValueError, match=r"lacks the tensor model.layer.b2s \(and 0 more\)"):
        load_model(write_variant(base_ckpt, tmp_path / "drop.ckpt", drop))
    with pytest.raises(ValueError, match=r"holds a tensor model\.layer\.extra that the model"):
        load_model(write_variant(base_ckpt, tmp_path / "add.ckpt", add))


MALFORMED = {
    "state_dict_not_a_mapping": lambda c: c.__setitem__("state_dict", 5),
    "state_dict_int_keys": lambda c: c.__setitem__("state_dict", {0: torch.zeros(1)}),
    "hyper_parameters_not_a_mapping": lambda c: c.__setitem__("hyper_parameters", 5),
    "config_a_string": lambda c: c.__setitem__("hyper_parameters", {"config": "configs"}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_checkpoint_is_one_line(base_ckpt, tmp_path: Path, case):
    path = write_variant(base_ckpt, tmp_path / f"{case}.ckpt", MALFORMED[case])
    with pytest.raises(ValueError) as caught:
        load_model(path)
    assert str(caught.value) == (
        f"ckpt_path: {str(path)!r} is not a checkpoint written by fastff.train"
    )
