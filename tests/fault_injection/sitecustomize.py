"""Fault injection for command-line tests: on PYTHONPATH, Python imports this at start-up.

``FASTFF_FULL_DISK=ckpt:N``: every checkpoint (``*.ckpt``) write after the first N fails with
``OSError(ENOSPC)`` halfway through, as a full disk would (half the bytes reach the file).
``FASTFF_FULL_DISK=metrics:N``: the same for the JSON writer (``fastff.atomic_json``) after N
writes. Nothing happens without the variable.
"""

from __future__ import annotations

import errno
import os

_SPEC = os.environ.get("FASTFF_FULL_DISK", "")


def _full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


if _SPEC:
    _what, _, _count = _SPEC.partition(":")
    _allowed = int(_count or 0)
    _writes = [0]

    if _what == "ckpt":
        from fsspec.implementations.local import LocalFileOpener

        def _write(self, data):  # type: ignore[no-untyped-def]
            if str(self.path).endswith(".ckpt"):
                _writes[0] += 1
                if _writes[0] > _allowed:
                    self.f.write(data[: len(data) // 2])
                    raise _full()
            return self.f.write(data)

        LocalFileOpener.write = _write

    elif _what == "metrics":
        import json

        import fastff.atomic_json as atomic_json

        class _FullJson:
            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(json, name)

            @staticmethod
            def dump(data, handle, **kwargs):  # type: ignore[no-untyped-def]
                _writes[0] += 1
                if _writes[0] > _allowed:
                    text = json.dumps(data, **kwargs)
                    handle.write(text[: len(text) // 2])
                    raise _full()
                return json.dump(data, handle, **kwargs)

        atomic_json.json = _FullJson()
