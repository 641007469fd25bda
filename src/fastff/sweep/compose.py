"""Compose a trial's Hydra config in this process (no training): checks that every parameter is a
real config key or preset, and reads what a trial will cost."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fastff.sweep.command import hydra_overrides


@contextmanager
def composer(config_name: str) -> Iterator[Any]:
    """A function ``params -> DictConfig`` composing ``conf/<config_name>.yaml`` with a trial's
    overrides (the Hydra app's own config dir; ``hydra`` and ``paths`` are left unresolved)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fastff.hydra_app import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):

        def compose_trial(params: Mapping[str, Any]) -> DictConfig:
            return compose(config_name=config_name, overrides=hydra_overrides(params))

        yield compose_trial
    GlobalHydra.instance().clear()


def effective(cfg: DictConfig, ignore: Iterable[str] = ("paths", "hydra")) -> dict[str, Any]:
    """The parts of a composed config that decide what a trial computes (resolved; ``paths``,
    ``hydra`` and run names left out), for finding duplicate trials."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    for key in ignore:
        plain.pop(key, None)
    return plain
