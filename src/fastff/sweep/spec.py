"""A sweep file: W&B sweep syntax, loaded, checked against the ``sweeps`` package's schema and
against the mistakes W&B would not catch (a ``None`` or dict value, a command that is not a
fastff entry point run with ``${args_no_hyphens}``)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENTRY_POINTS = {"fastff.train": "train", "fastff.bench": "bench"}
"""Entry module -> the Hydra config it composes (``conf/<name>.yaml``)."""
REQUIRED_MACROS = ("${interpreter}", "${args_no_hyphens}")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepError(ValueError):
    """A sweep file or sweep state the runner refuses, with a message naming the problem."""


@dataclass(frozen=True)
class SweepSpec:
    """A loaded sweep file.

    Attributes:
        path: where the file is.
        config: its content, exactly as W&B receives it.
        name: ``config["name"]``, else the file's stem; the local state lives in a folder of
            this name.
    """

    path: Path
    config: dict[str, Any]
    name: str

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return self.config["parameters"]

    @property
    def metric_name(self) -> str | None:
        return (self.config.get("metric") or {}).get("name")

    @property
    def metric_goal(self) -> str:
        return (self.config.get("metric") or {}).get("goal", "minimize")

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.config["command"]]

    @property
    def entry_module(self) -> str | None:
        """The module run with ``-m`` (``fastff.train``, ``fastff.bench``), or None."""
        command = self.command
        if "-m" in command and command.index("-m") + 1 < len(command):
            return command[command.index("-m") + 1]
        return None

    @property
    def hydra_config(self) -> str | None:
        """The Hydra config the trials compose (``train`` / ``bench``), None for other modules."""
        return ENTRY_POINTS.get(self.entry_module or "")

    @property
    def is_bench(self) -> bool:
        """A speed benchmark: its trials time code, so they always run one at a time."""
        return self.entry_module == "fastff.bench"

    @property
    def run_cap(self) -> int | None:
        return self.config.get("run_cap")

    @property
    def fingerprint(self) -> str:
        """A hash of the file's content (not of its comments or layout): a saved state belongs to
        the sweep file it was made from."""
        text = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def schema_violations(config: dict[str, Any]) -> list[str]:
    """The ``sweeps`` package's own checks of a W&B sweep config (its JSON schema and more)."""
    from fastff.sweep.search import import_sweeps

    try:
        return list(import_sweeps().schema_violations_from_proposed_config(config))
    except ValueError as err:
        return [str(err)]


def _value_problems(name: str, parameter: dict[str, Any]) -> list[str]:
    values = list(parameter.get("values", []))
    if "value" in parameter:
        values.append(parameter["value"])
    problems = []
    for value in values:
        if value is None:
            problems.append(
                f"parameters.{name}: a None value reaches the command line as the string "
                "'None'; use a config preset (variant=...) or leave the key out"
            )
        elif isinstance(value, dict):
            problems.append(
                f"parameters.{name}: a dict value reaches the command line as a Python dict "
                "literal, which Hydra cannot read; give dotted keys (layer.width) or a preset"
            )
    if len(values) != len({json.dumps(v, sort_keys=True) for v in values}):
        problems.append(f"parameters.{name}: a value is listed twice")
    return problems


def check_spec(spec: SweepSpec) -> None:
    """Raise SweepError listing every problem of ``spec``."""
    problems = schema_violations(spec.config)
    if not problems:
        if "command" not in spec.config:
            problems.append(
                "command is missing: give [${env}, ${interpreter}, -m, fastff.train, "
                "${args_no_hyphens}] (W&B's default command runs a program file)"
            )
        else:
            command = spec.command
            for macro in REQUIRED_MACROS:
                if macro not in command:
                    problems.append(f"command must contain {macro}, got {command}")
            if spec.entry_module is None:
                problems.append(f"command must run a module with -m, got {command}")
        if not NAME_PATTERN.match(spec.name):
            problems.append(
                f"name {spec.name!r}: use letters, digits, '_', '.' and '-' (a folder name)"
            )
        for name, parameter in spec.parameters.items():
            problems.extend(_value_problems(name, parameter))
    if problems:
        raise SweepError(f"{spec.path}: " + "; ".join(problems))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; SweepError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())  # one line
        raise SweepError(f"{path} is not valid YAML: {problem}") from None
    if not isinstance(config, dict):
        raise SweepError(f"{path} must hold a mapping (method, metric, parameters, command)")
    spec = SweepSpec(path=path, config=config, name=str(config.get("name") or path.stem))
    check_spec(spec)
    return spec
