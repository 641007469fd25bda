"""``python -m fastff.sweep SWEEP_FILE``: see :mod:`fastff.sweep.cli`."""

from fastff.sweep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
