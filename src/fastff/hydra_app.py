"""Shared plumbing of the Hydra entry points: where conf/ is, clean exits on user errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("fastff")


def config_dir() -> str:
    """Absolute path of the Hydra configs: $FASTFF_CONFIG_DIR, else conf/ of this checkout."""
    env = os.environ.get("FASTFF_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


def instantiate_or_config_error(cfg: Any, key: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``; a ValueError (or Lightning's MisconfigurationException) from
    the target becomes a ConfigError, prefixed with the config ``key`` when given."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from fastff.config_checks import ConfigError
    from fastff.models.layer_builders import LayerConfigError

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, MisconfigurationException)):
            # A layer error names its ``layer.*`` key; others may name a ``<key>.*`` one.
            named = (
                key is None
                or isinstance(cause, LayerConfigError)
                or str(cause).startswith(f"{key}.")
            )
            raise ConfigError(str(cause) if named else f"{key}: {cause}") from None
        raise


def exit_on_user_error(func: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T:
    """Run ``func``; a user error (one of ``errors``) prints one line and exits with status 2."""
    try:
        return func()
    except errors as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
