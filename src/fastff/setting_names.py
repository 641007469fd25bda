"""Suggestions for misspelt setting names: the tail of every ``unknown setting`` line.

Standard library only, so config checks, layer builders and the Hydra entry points share it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest_name", "unknown_setting_hint"]


def closest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to the misspelt ``name`` (case-insensitive, difflib ratio >= 0.6),
    or None when none is close; names starting with ``_`` (``_target_``) are never proposed."""
    by_lower = {str(c).lower(): str(c) for c in candidates if not str(c).startswith("_")}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def unknown_setting_hint(name: str, candidates: Iterable[str], limit: int = 12) -> str:
    """``"; did you mean <closest>?"`` when a candidate is close to ``name``, else
    ``"; settings here: a, b, ..."`` (at most ``limit`` names), else ``""``."""
    names = sorted({str(c) for c in candidates if not str(c).startswith("_")})
    closest = closest_name(name, names)
    if closest is not None:
        return f"; did you mean {closest}?"
    if not names:
        return ""
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"; settings here: {shown}"
