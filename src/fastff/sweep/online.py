"""With a W&B server: create the sweep there (``wandb.sweep``) or join one, print its address and
run ``wandb agent`` for it. The agent runs each trial with the file's command; the trial sees
``WANDB_SWEEP_ID`` and logs online to the sweep (:func:`fastff.tracking.resolve_wandb_mode`)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from fastff.sweep.spec import SweepError, SweepSpec

DEFAULT_PROJECT = "fastff"


def server_config(spec: SweepSpec) -> dict[str, Any]:
    """The configuration submitted to the server: the file's content, with ``name`` defaulting
    to the file's stem (what ``wandb sweep <file>`` would submit, plus that name)."""
    config = copy.deepcopy(spec.config)
    config.setdefault("name", spec.name)
    return config


def project_for(spec: SweepSpec, project: str | None) -> str:
    """``--project``, else the file's ``project``, else ``fastff``."""
    return project or spec.config.get("project") or DEFAULT_PROJECT


def sweep_path(sweep_id: str, entity: str | None, project: str | None) -> str:
    """``entity/project/id`` as ``wandb agent`` takes it (an id with slashes is kept)."""
    if "/" in sweep_id:
        return sweep_id
    return "/".join(p for p in (entity, project, sweep_id) if p)


def wandb_executable() -> list[str]:
    """The ``wandb`` command of this environment."""
    beside = Path(sys.executable).with_name("wandb")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def agent_command(path: str, count: int | None = None) -> list[str]:
    """``wandb agent [--count N] entity/project/id``: what more machines run to join."""
    return [*wandb_executable(), "agent", *(["--count", str(count)] if count else []), path]


def sweep_url(path: str) -> str:
    """The sweep's page on the W&B server (``WANDB_BASE_URL`` or the default server)."""
    import wandb
    from wandb.util import app_url

    entity, project, sweep_id = [*path.split("/"), "", "", ""][:3]
    base = wandb.Api().settings.get("base_url") or "https://api.wandb.ai"
    return f"{app_url(base)}/{entity}/{project}/sweeps/{sweep_id}"


def run_online(
    spec: SweepSpec,
    *,
    sweep_id: str | None = None,
    entity: str | None = None,
    project: str | None = None,
    count: int | None = None,
    console: Console | None = None,
    runner: Any = subprocess.call,
) -> int:
    """Create (or join, with ``sweep_id``) the sweep on the server and run an agent for it;
    returns the agent's exit status.

    Raises:
        SweepError: no W&B login (``wandb login`` or ``WANDB_API_KEY``), or the server refused
            or could not be reached; one line that says what to do.
    """
    import wandb
    from wandb.errors import AuthenticationError, CommError, UsageError

    console = console or Console()
    project = project_for(spec, project)
    try:
        if sweep_id is None:
            sweep_id = wandb.sweep(sweep=server_config(spec), entity=entity, project=project)
            console.print(f"Created sweep {sweep_id} from {spec.path}")
        if entity is None and "/" not in sweep_id:
            entity = wandb.Api().default_entity
        path = sweep_path(sweep_id, entity, project)
        url = sweep_url(path)
    except (UsageError, AuthenticationError) as err:
        found = "none was found" if isinstance(err, UsageError) else f"{_first_line(err)}"
        raise SweepError(
            f"--online needs a W&B login and {found}: run `wandb login` (or set "
            f"WANDB_API_KEY), or drop --online to run the sweep locally without a server"
        ) from None
    except CommError as err:
        raise SweepError(
            f"--online: the W&B server did not answer ({_first_line(err)}); check the network "
            f"and WANDB_BASE_URL, or drop --online to run the sweep locally"
        ) from None
    command = agent_command(path, count)
    console.print(f"Sweep: {url}", soft_wrap=True)
    console.print(
        f"More agents (any machine with fastff and a W&B login): {' '.join(command)}",
        soft_wrap=True,
    )
    return int(runner(command))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
