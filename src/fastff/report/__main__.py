"""``python -m fastff.report [SOURCES...]``: see :mod:`fastff.report.cli`."""

from fastff.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
