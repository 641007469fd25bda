"""Instantiate a Hydra config node; a value its target refuses becomes a :class:`ConfigError`."""

from __future__ import annotations

from typing import Any

from fastff.errors import ConfigError, LayerConfigError


def instantiate_or_config_error(cfg: Any, key: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``; a ValueError (or Lightning's MisconfigurationException) from
    the target becomes a ConfigError, prefixed with the config ``key`` when given."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

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
