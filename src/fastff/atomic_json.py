"""Write a JSON file atomically: a temporary file in the same folder, then a rename, so a reader
(or a crash) never sees half a file. Dependency-free, for every package that keeps state on disk."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json_atomic(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int = 2,
    default: Callable[[Any], Any] | None = str,
) -> Path:
    """Write ``data`` as JSON to ``path`` (parents created); returns the path.

    ``default`` serialises values JSON lacks (``str`` by default; None makes them an error).
    The temporary file is flushed to disk before the rename and removed if writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=indent, default=default)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
