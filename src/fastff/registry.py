"""The builders a recorded config may name: the one allow-list of ``_target_`` values.

A checkpoint (``hyper_parameters.config.run``) and a sweep's ``state.json`` are data: they may come
from someone else. Their configs are handed to ``hydra.utils.instantiate``, which imports and calls
whatever ``_target_`` names, so before anything is imported or instantiated every ``_target_`` in
them, nested entries included, must be one fastff's own configs use:

- the kinds of each config group: ``conf/<group>/<kind>.yaml``'s ``_target_`` (data: every
  dataset's data module; layer: ``fastff.models.layer_builders.{fff,ff,moe}``; model: the flat net
  and the ViT builder), read from the configs themselves, so the list never drifts from them, and
  for the layer group the builders of registered layer kinds (:mod:`fastff.models.kinds`);
- nested entries (e.g. ``activation: {_target_: torch.nn.GELU, _partial_: true}``): the activation
  classes :data:`fastff.layers.activations.ACTIVATIONS` names.

A string holding an interpolation (``${...}``) is refused too: Hydra resolves interpolations before
it instantiates, and a resolver such as ``oc.decode`` can turn a string into a new ``_target_``.

:func:`kinds` is the registry's shape (kind name -> builder); for the layer group it merges in the
kinds other packages register in the entry-point group ``fastff.layer_kinds``
(:mod:`fastff.models.kinds`), each allowed through its registered builder only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RECORDED_GROUPS = ("data", "layer", "model")
"""The config groups a checkpoint records and fastff.eval / fastff.export instantiate."""

TARGET = "_target_"


class ForeignTargetError(ValueError):
    """A recorded config names something that is not one of fastff's builders; the message
    (one line) names the key and the value."""


def _conf_dir() -> Path:
    from fastff.config_dir import config_dir

    return Path(config_dir())


@functools.cache
def _group_kinds(conf: Path, group: str) -> dict[str, str]:
    import yaml

    found: dict[str, str] = {}
    for path in sorted((conf / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and isinstance(data.get(TARGET), str):
            found[path.stem] = data[TARGET]
    return found


def kinds(group: str) -> dict[str, str]:
    """The kinds of config ``group`` (``"data"``, ``"layer"``, ``"model"``): kind name (the
    config's file name, e.g. ``"fff"``) -> its builder's ``_target_``. The layer group adds the
    layer kinds other packages register (:func:`fastff.models.kinds.targets`: entry-point group
    ``fastff.layer_kinds``), each allowed through its registered builder only."""
    found = dict(_group_kinds(_conf_dir(), group))
    if group == "layer" and _has_registered_layer_kinds():
        from fastff.models.kinds import targets  # imports torch: only when there are some

        found |= targets()
    return found


def _has_registered_layer_kinds() -> bool:
    from importlib.metadata import entry_points

    return bool(entry_points(group="fastff.layer_kinds"))


def nested_targets() -> frozenset[str]:
    """``_target_`` values allowed below a group's top level: fastff's activation classes, by
    their public ``torch.nn`` name and their defining module's name."""
    from torch import nn

    from fastff.layers.activations import ACTIVATIONS

    names = set()
    for make in ACTIVATIONS.values():
        if isinstance(make, type) and issubclass(make, nn.Module):
            names.add(f"torch.nn.{make.__name__}")
            names.add(f"{make.__module__}.{make.__qualname__}")
    return frozenset(names)


@functools.cache
def _all_conf_targets(conf: Path) -> frozenset[str]:
    import yaml

    found: set[str] = set()
    for path in conf.rglob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        found.update(value for key, value in iter_targets(data, "") if isinstance(value, str))
    return frozenset(found)


def conf_targets() -> frozenset[str]:
    """Every ``_target_`` value any config under ``conf/`` uses (at any depth), plus the layer
    kinds' builders and :func:`nested_targets`: what a sweep trial's overrides may name."""
    return _all_conf_targets(_conf_dir()) | frozenset(kinds("layer").values()) | nested_targets()


def iter_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted key, value)`` of a ``_target_`` entry in ``node`` (dicts and lists)."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if name == TARGET:
                yield child, value
            else:
                yield from iter_targets(value, child)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from iter_targets(value, f"{key}[{index}]")


def _strings(node: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every ``(dotted key, string)`` in ``node``: values, and keys too (Hydra reads both)."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, Mapping):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if isinstance(name, str):
                yield child, name
            yield from _strings(value, child)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _strings(value, f"{key}[{index}]")


def check_no_interpolation(node: Any, key: str, source: str) -> None:
    """Raise ForeignTargetError if a string in ``node`` holds an interpolation ``${...}``."""
    for where, text in _strings(node, key):
        if "${" in text:
            raise ForeignTargetError(
                f"{source}: {where}={text!r} holds an interpolation, which a recorded config "
                "never does (it is stored resolved); refused before importing anything"
            )


def check_targets(
    node: Any, key: str, allowed: frozenset[str] | set[str], source: str, what: str
) -> None:
    """Raise ForeignTargetError for the first ``_target_`` in ``node`` (its dotted key prefixed
    by ``key``) that is not in ``allowed``; ``what`` says which builders those are."""
    for where, value in iter_targets(node, key):
        if not isinstance(value, str) or value not in allowed:
            raise ForeignTargetError(
                f"{source}: {where}={value!r} is not one of fastff's {what} "
                f"({sorted(allowed)}); refused before importing anything"
            )


def check_recorded_config(run: Mapping[str, Any], source: str = "ckpt_path") -> None:
    """Check a checkpoint's recorded run config before anything is imported or instantiated.

    Every group of :data:`RECORDED_GROUPS` must be a mapping whose top-level ``_target_`` is one
    of that group's :func:`kinds` and whose nested ``_target_`` entries are
    :func:`nested_targets`; no string may hold an interpolation.

    Raises:
        ForeignTargetError: one line naming ``source``, the key and the value.
    """
    nested = nested_targets()
    for group in RECORDED_GROUPS:
        cfg = run.get(group)
        if not isinstance(cfg, Mapping):
            raise ForeignTargetError(
                f"{source}: the checkpoint's config has no {group} section (got {cfg!r}); not a "
                "checkpoint written by fastff.train"
            )
        check_no_interpolation(cfg, group, source)
        builders = kinds(group)
        top = cfg.get(TARGET)
        if not isinstance(top, str) or top not in builders.values():
            raise ForeignTargetError(
                f"{source}: {group}.{TARGET}={top!r} is not one of fastff's {group} builders "
                f"({sorted(builders.values())}); refused before importing anything"
            )
        for name, value in cfg.items():
            if name != TARGET:
                check_targets(value, f"{group}.{name}", nested, source, "nested builders")


def override_targets(overrides: list[str]) -> Iterator[tuple[str, Any]]:
    """Every ``(dotted key, value)`` of a ``_target_`` that Hydra command-line overrides
    (``key=value``) carry, read as Hydra reads them: a key ending in ``_target_``, and entries
    of dict or list values. An override Hydra cannot parse is skipped: the command it reaches
    stops on it before anything is instantiated."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
            value = override.value()
        except (HydraException, ValueError):
            continue
        key = override.key_or_group
        if key.rsplit(".", 1)[-1] == TARGET:
            yield key, value
        yield from iter_targets(value, key)


def check_override_targets(
    overrides: list[str], allowed: frozenset[str] | set[str], source: str
) -> None:
    """Raise ForeignTargetError (one line naming ``source``, the key and the value) for the
    first ``_target_`` the overrides carry (:func:`override_targets`) that is not in
    ``allowed``."""
    for where, target in override_targets(overrides):
        if not isinstance(target, str) or target not in allowed:
            raise ForeignTargetError(
                f"{source}: {where}={target!r} is not one of fastff's builders "
                f"({sorted(allowed)}); refused before running anything"
            )
