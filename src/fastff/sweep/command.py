"""A trial's command line, built by the W&B agent's own code from the sweep file's ``command``."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from fastff.sweep.search import as_run_config

_PLAIN = re.compile(r"^[A-Za-z0-9_./:+-]*$")


def agent_command(
    command: Sequence[str], params: Mapping[str, Any], interpreter: str = "python"
) -> list[str]:
    """The command ``wandb agent`` runs for a trial with ``params``: the sweep file's
    ``command`` with W&B's macros filled in (``${env}``, ``${interpreter}``,
    ``${args_no_hyphens}``, ``${envvar:NAME}``, ...), exactly as in ``wandb.wandb_agent``. The
    agent fills ``${interpreter}`` with ``python``; the local runner passes its own interpreter."""
    from wandb.sdk.launch.sweeps import utils

    template = utils.create_sweep_command(list(command))
    macros: dict[str, Any] = utils.create_sweep_command_args({"args": as_run_config(params)})
    macros["interpreter"] = [interpreter]
    if platform.system() != "Windows":
        macros["env"] = ["/usr/bin/env"]
    line: list[str] = []
    for chunk in map(str, template):
        if chunk.startswith("${") and chunk.endswith("}"):
            line += macros.get(chunk[2:-1]) or []
        else:
            line.append(chunk)
    return line


def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value (quoted when it has characters Hydra would parse)."""
    if _PLAIN.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def local_command(
    command: Sequence[str], params: Mapping[str, Any], run_dir: os.PathLike | str
) -> list[str]:
    """The local runner's trial command: the agent's command with this interpreter, plus
    ``hydra.run.dir=<run_dir>`` so the trial writes into the sweep's folder."""
    line = agent_command(command, params, interpreter=sys.executable)
    return [*line, f"hydra.run.dir={hydra_value(str(run_dir))}"]


def hydra_overrides(params: Mapping[str, Any]) -> list[str]:
    """The trial's ``${args_no_hyphens}``: the Hydra overrides the agent passes."""
    from wandb.sdk.launch.sweeps import utils

    return list(utils.create_sweep_command_args({"args": as_run_config(params)})["args_no_hyphens"])
