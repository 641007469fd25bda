"""A misspelt key on the command line, in any config group and with or without a leading ``+``,
stops with one ``error: <key>: ...`` line naming the closest valid key (exit status 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from pipeline_utils import CONF, run_cli

from fastff.config_checks import ConfigError, check_train_config
from fastff.hydra_app import unknown_override_line
from fastff.setting_names import closest_name, unknown_setting_hint


def composition_error(*overrides: str) -> ConfigCompositionException:
    GlobalHydra.instance().clear()
    with (
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as caught,
    ):
        compose(config_name="train", overrides=list(overrides))
    return caught.value


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("layer.leaf_widht=8", "error: layer.leaf_widht: unknown setting 'leaf_widht' in layer; "),
        ("optimizer.lrr=0.1", "error: optimizer.lrr: unknown setting 'lrr' in optimizer; "),
        ("trainer.max_epoch=3", "error: trainer.max_epoch: unknown setting 'max_epoch' in trainer"),
        ("data.batchsize=8", "error: data.batchsize: unknown setting 'batchsize' in data; "),
        ("callbacks.early_stopping.patiense=3", "in callbacks.early_stopping; "),
        ("seeed=1", "error: seeed: unknown setting 'seeed' in the top-level config; "),
        ("lyer.width=32", "error: lyer.width: unknown setting 'lyer' in the top-level config; "),
    ],
)
def test_unknown_override_is_one_line_with_the_closest_key(override: str, expected: str):
    closest = {
        "layer.leaf_widht=8": "leaf_width",
        "optimizer.lrr=0.1": "lr",
        "trainer.max_epoch=3": "max_epochs",
        "data.batchsize=8": "batch_size",
        "callbacks.early_stopping.patiense=3": "patience",
        "seeed=1": "seed",
        "lyer.width=32": "layer",
    }[override]
    line = unknown_override_line(composition_error(override))
    assert line is not None
    assert line.startswith(expected) or expected in line
    assert f"did you mean {closest}?" in line
    assert "\n" not in line


def test_other_composition_errors_are_left_to_hydra():
    # Sweep syntax without --multirun: Hydra's own message explains it; not a misspelt key.
    assert unknown_override_line(composition_error("layer.leaf_width=1,2")) is None


def test_hint_without_a_close_key_lists_the_settings():
    assert closest_name("zzz", ["lr", "momentum"]) is None
    assert unknown_setting_hint("zzz", ["momentum", "lr", "_target_"]) == (
        "; settings here: lr, momentum"
    )
    assert closest_name("LEAF_WIDTH", ["leaf_width", "width"]) == "leaf_width"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "+optimizer.lrr=0.1",
            "optimizer.lrr: unknown setting for torch.optim.Adam; did you mean lr?",
        ),
        (
            "+trainer.max_epoch=3",
            "trainer.max_epoch: unknown setting for lightning.pytorch.Trainer",
        ),
        ("+data.batchsize=8", "data.batchsize: unknown setting for fastff.data.digits."),
        ("+callbacks.early_stopping.patiense=3", "; did you mean patience?"),
        ("+logger.wandb.projct=x", "logger.wandb.projct: unknown setting for lightning.pytorch."),
        ("scheduler=plateau +scheduler.scheduler.factr=0.3", "; did you mean factor?"),
        ("+layer.leaf_widht=8", "layer.leaf_widht: unknown setting for layer=fff; did you mean"),
    ],
)
def test_added_unknown_key_is_refused_by_the_config_check(make_cfg, override, expected):
    with pytest.raises(ConfigError) as caught:
        check_train_config(make_cfg(*override.split()))
    assert expected in str(caught.value)


def test_added_keys_the_target_takes_pass(make_cfg):
    # Real constructor arguments that the configs do not list (the reason `+` exists).
    check_train_config(
        make_cfg(
            "+trainer.gradient_clip_val=1.0", "+optimizer.amsgrad=true", "+logger.wandb.notes=x"
        )
    )


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("fastff.train", ["layer.leaf_widht=8"], "error: layer.leaf_widht: unknown setting"),
        ("fastff.train", ["--multirun", "layer.leaf_widht=4,8"], "error: layer.leaf_widht: "),
        ("fastff.bench", ["timing.repeat=3"], "error: timing.repeat: unknown setting"),
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, module: str, args: list[str], expected):
    dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'multi'}"]
    proc = run_cli(module, *args, *dirs, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected)
    assert "did you mean" in lines[0]
