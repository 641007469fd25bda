"""Every sweep file in sweeps/ is valid W&B sweep syntax, every parameter value composes with
the real Hydra configs, and no grid runs the same configuration twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fastff.sweep import load_spec
from fastff.sweep.command import agent_command
from fastff.sweep.compose import composer, effective
from fastff.sweep.search import grid_size, import_sweeps, propose

ROOT = Path(__file__).resolve().parents[2]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
OFFLINE = {
    "table1_digits": "digits",
    "table1_mnist5k": "mnist5k",
    "table2_mnist5k": "mnist5k",
    "table3_mnist5k": "mnist5k",
    "fig2_mnist5k": "mnist5k",
    "fig2_digits": "digits",
    "small_leaf_mnist5k": "mnist5k",
}
SEED_KEYS = ("seed",)


def _grid(spec) -> list[dict]:
    """Every grid point (the sweeps engine's own enumeration)."""
    return propose(spec, [], grid_size(spec))


def test_the_paper_experiments_and_offline_sweeps_are_there():
    names = {p.stem for p in SWEEP_FILES}
    assert {"table1", "fig2", "table2", "table3", "speed", *OFFLINE} <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_valid_wandb_sweep_syntax_and_the_agents_command(path):
    spec = load_spec(path)  # raises on any problem
    sweeps = import_sweeps()
    assert sweeps.schema_violations_from_proposed_config(spec.config) == []
    sweeps.SweepConfig(spec.config)
    assert spec.command == [
        "${env}",
        "${interpreter}",
        "-m",
        spec.entry_module,
        "${args_no_hyphens}",
    ]
    assert spec.entry_module in ("fastff.train", "fastff.bench")
    assert spec.method == "grid" and spec.metric_name and spec.name == path.stem
    if spec.entry_module == "fastff.train":
        assert spec.metric_name == "G_A" and spec.metric_goal == "maximize"
        tags = spec.parameters["tags"]["value"]
        assert f"sweep_{spec.name}" in tags  # the trials' W&B runs carry the sweep's name
    first = _grid(spec)[0]
    command = agent_command(spec.config["command"], first)
    assert command[:4] == ["/usr/bin/env", "python", "-m", spec.entry_module]


@pytest.mark.parametrize("name,dataset", OFFLINE.items())
def test_offline_sweeps_need_no_download_and_have_3_seeds(name, dataset):
    spec = load_spec(ROOT / "sweeps" / f"{name}.yaml")
    points = _grid(spec)
    with composer("train") as compose:
        cfg = compose(points[0])
    assert dataset in cfg.data._target_.lower()
    assert len({p["seed"] for p in points}) >= 3


def _covering(points: list[dict]) -> list[dict]:
    """A few grid points that together use every value of every parameter."""
    seen: set[tuple[str, str]] = set()
    chosen = []
    for point in points:
        pairs = {(k, json.dumps(v)) for k, v in point.items()}
        if not pairs <= seen:
            chosen.append(point)
            seen |= pairs
    return chosen


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_parameter_value_composes_with_hydra(path):
    spec = load_spec(path)
    with composer(spec.hydra_config) as compose:
        for point in _covering(_grid(spec)):
            cfg = compose(point)
            if spec.is_bench:
                assert cfg.mode in cfg.modes, f"{point}: no modes.{cfg.mode} in conf/bench.yaml"
            else:
                layer = OmegaConf.to_container(cfg.layer, resolve=False)
                assert layer["_target_"].startswith("fastff.models.layer_builders.")


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_no_grid_runs_the_same_configuration_twice(path):
    """Composed with Hydra, the grid's points (seeds aside) are all different configurations."""
    spec = load_spec(path)
    points = _grid(spec)
    assert len(points) == grid_size(spec)
    seeds = {k: spec.parameters[k]["values"][0] for k in SEED_KEYS if k in spec.parameters}
    distinct = {json.dumps({**p, **seeds}, sort_keys=True): p for p in points}
    configs: dict[str, dict] = {}
    with composer(spec.hydra_config) as compose:
        for point in distinct.values():
            key = json.dumps(effective(compose(point)), sort_keys=True, default=str)
            assert key not in configs, f"{point} runs the same configuration as {configs[key]}"
            configs[key] = point
    n_seeds = len(spec.parameters["seed"]["values"]) if "seed" in spec.parameters else 1
    assert len(configs) * n_seeds == len(points)


def test_the_yaml_examples_of_sweeps_readme_are_valid_yaml():
    """What a user copies from sweeps/README.md parses, and its command is the files' own."""
    import re

    import yaml

    text = (ROOT / "sweeps" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks
    commands = [
        parsed["command"]
        for parsed in map(yaml.safe_load, blocks)
        if isinstance(parsed, dict) and "command" in parsed
    ]
    assert commands
    for path in SWEEP_FILES:  # the command each file really has (its entry module aside)
        spec = load_spec(path)
        module = spec.command.index("-m") + 1
        for command in commands:
            assert command[:module] + command[module + 1 :] == (
                spec.command[:module] + spec.command[module + 1 :]
            ), path.name
            assert command[module] == "fastff.train" and spec.entry_module in (
                "fastff.train",
                "fastff.bench",
            ), path.name
