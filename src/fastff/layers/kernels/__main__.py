"""``python -m fastff.layers.kernels build|status``: build the C++ CPU kernel, or report on it.

One library holds the hard forward (the ``fused_cpu`` strategy) and the soft routing of the
fused training forward (:mod:`fastff.layers.kernels.cpu_soft_routing`).

``build`` compiles the kernel unless a build for this source, CPU and torch exists (``--force``
rebuilds). Exit status: 0 when built (or already built); 0 with one warning line when there is
no C++ compiler (FFF then runs its PyTorch strategies); 1 when a compiler exists but the build
fails (``--best-effort``: one warning line and 0, as ``make install`` uses it).
"""

from __future__ import annotations

import argparse
import sys
import time

from fastff.layers import kernels
from fastff.layers.kernels import cpu_build


def build(force: bool, best_effort: bool, verbose: bool) -> int:
    spec = cpu_build.build_spec()
    existing = None if force else cpu_build.find_built_library(spec)
    if existing is not None:
        print(f"fastff: the fused CPU kernel is built: {existing}")
        return 0
    cxx = cpu_build.compiler()
    if cxx is None:
        print(
            "fastff: warning: no C++ compiler on PATH, so the fused CPU kernel is not built; "
            "FFF inference uses the PyTorch strategies",
            file=sys.stderr,
        )
        return 0
    print(
        f"fastff: building the fused CPU kernel ({cxx}, {spec.isa}; up to a minute, once)...",
        flush=True,
    )
    start = time.perf_counter()
    try:
        library = cpu_build.build(force=force, verbose=verbose)
    except cpu_build.KernelBuildError as error:
        if best_effort:
            last = str(error).splitlines()[-1] if str(error) else type(error).__name__
            print(
                f"fastff: warning: building the fused CPU kernel failed ({last[:200]}); FFF "
                "inference uses the PyTorch strategies (`make kernels` shows the full error)",
                file=sys.stderr,
            )
            return 0
        print(f"{error}\nfastff: error: building the fused CPU kernel failed", file=sys.stderr)
        return 1
    print(f"fastff: built in {time.perf_counter() - start:.0f} s: {library}")
    return 0


def status() -> int:
    state = cpu_build.status()
    print(f"hard strategies: {', '.join(kernels.strategy_names())}")
    print(f"fused_cpu: {state.state} ({state.reason})")
    print("  also holds the soft training kernels (FFF.soft_implementation 'fused_cpu')")
    print(f"  library:  {state.spec.library}")
    print(f"  compiler: {state.compiler or 'none on PATH'}; ISA: {state.spec.isa}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastff.layers.kernels", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build the C++ CPU kernel if missing")
    build_parser.add_argument("--force", action="store_true", help="rebuild from scratch")
    build_parser.add_argument(
        "--best-effort", action="store_true", help="a failed build warns and exits 0"
    )
    build_parser.add_argument("--verbose", action="store_true", help="show the compiler output")
    commands.add_parser("status", help="say whether the kernel is built and where")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.force, args.best_effort, args.verbose)
    return status()


if __name__ == "__main__":
    sys.exit(main())
