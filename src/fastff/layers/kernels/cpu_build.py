"""Build and load the C++ CPU kernels (:data:`SOURCES`): both only when asked.

One library holds the fused hard forward (``csrc/fff_hard_cpu.cpp``, the ``fused_cpu`` hard
strategy) and the soft training kernels (``csrc/fff_soft_routing_cpu.cpp``: routing and leaf
passes; ``csrc/fff_soft_train_cpu.cpp``: the whole ReLU training step; used by the fused soft
forward, :mod:`fastff.layers.fff_soft_fused`) and the hard forward of a quantized FFF from its
bfloat16/int8 leaf weights (``csrc/fff_hard_compact_cpu.cpp``, :mod:`.cpu_compact`; it shares
the tree walk of ``csrc/fff_hard_cpu.h`` with the float kernel), so one build and one load cover
all of them.

- :func:`build` compiles the kernel in the calling process with ``torch.utils.cpp_extension``
  (the C++ compiler and ninja; 10-60 s) into its own folder of the torch
  extensions cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). The
  folder name carries the vector ISA and a hash of the source, its path, the flags, the Python
  and the torch version, so every checkout, CPU kind and torch has its own build.
  ``python -m fastff.layers.kernels build`` and ``make kernels`` call it; ``make install`` too.
- :func:`load` decides once per process, synchronously, whether the kernel is usable: it loads an
  existing build with ``torch.ops.load_library`` (no ninja run, no compiler, no process or
  thread) or, if there is none, logs one line saying how to build it and leaves FFF on the
  PyTorch strategies for the rest of the process. ``load(build_missing=True)`` (the benchmark,
  the tests) builds a missing kernel first and revisits an earlier "not built".
- ``FASTFF_FUSED_CPU=0`` makes :func:`load` refuse the kernel (both the hard strategy and the
  soft routing then use PyTorch ops).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shlex
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "csrc" / "fff_hard_cpu.cpp"
ROUTING_SOURCE = Path(__file__).parent / "csrc" / "fff_soft_routing_cpu.cpp"
TRAIN_SOURCE = Path(__file__).parent / "csrc" / "fff_soft_train_cpu.cpp"
COMPACT_SOURCE = Path(__file__).parent / "csrc" / "fff_hard_compact_cpu.cpp"
SOURCES = (SOURCE, ROUTING_SOURCE, TRAIN_SOURCE, COMPACT_SOURCE)
"""Compiled into one library."""
HEADERS = (
    Path(__file__).parent / "csrc" / "fff_soft_cpu.h",
    Path(__file__).parent / "csrc" / "fff_hard_cpu.h",
)
"""Included by the sources: part of the build's identity."""
DISABLE_ENV = "FASTFF_FUSED_CPU"
BUILD_COMMAND = "python -m fastff.layers.kernels build"
LIBRARY_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"  # as torch.utils.cpp_extension

logger = logging.getLogger("fastff.kernels")


class KernelBuildError(RuntimeError):
    """The kernel could not be built (the message ends with the compiler's last lines)."""


class NoCompilerError(KernelBuildError):
    """No C++ compiler on PATH: the kernel cannot be built on this machine."""


@dataclass(frozen=True)
class BuildSpec:
    """What one build of the kernel is made from and where it lives."""

    name: str
    isa: str
    cflags: tuple[str, ...]
    directory: Path

    @property
    def library(self) -> Path:
        return self.directory / f"{self.name}{LIBRARY_SUFFIX}"

    @property
    def marker(self) -> Path:
        """Written after a complete build; a library without it is never loaded."""
        return self.directory / "complete"


def extensions_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR``, else torch's default extensions cache folder."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    with _quiet_cpp_extension() as cpp_extension:
        return Path(cpp_extension.get_default_build_root())


def build_spec() -> BuildSpec:
    """The build of the current source for this CPU's ISA, Python and torch."""
    isa, isa_flags = _isa_flags()
    cflags = ("-O3", "-fopenmp", *isa_flags)
    identity = hashlib.sha1()
    for source in (*SOURCES, *HEADERS):
        identity.update(source.read_bytes())
    python = f"{sys.version_info.major}.{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    paths = "|".join(str(source.resolve()) for source in SOURCES)
    identity.update(f"{paths}|{cflags}|{torch.__version__}|{python}".encode())
    name = f"fastff_fff_cpu_{isa}_{identity.hexdigest()[:12]}"
    return BuildSpec(name, isa, cflags, extensions_root() / "fastff" / name)


def compiler() -> str | None:
    """Path of the C++ compiler torch would use (``$CXX``, default ``c++``), or None."""
    command = shlex.split(os.environ.get("CXX", "c++")) or ["c++"]
    return shutil.which(command[0])


def disabled_reason() -> str | None:
    """``"FASTFF_FUSED_CPU=0"`` if the user disabled the kernel, else None."""
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{DISABLE_ENV}=0"
    return None


def find_built_library(spec: BuildSpec | None = None) -> Path | None:
    """The complete build of ``spec`` (default: the current one), or None; runs nothing."""
    spec = spec or build_spec()
    return spec.library if spec.marker.is_file() and spec.library.is_file() else None


def build(*, force: bool = False, verbose: bool = False) -> Path:
    """Build the kernel now in this process unless a complete build exists; returns the library.

    The build also loads the library into this process (``cpp_extension.load`` does), but
    :func:`load` decides whether FFF uses it. ``force`` rebuilds from scratch.

    Raises:
        NoCompilerError: no C++ compiler on PATH.
        KernelBuildError: the compiler or linker failed.
    """
    spec = build_spec()
    if compiler() is None:
        raise NoCompilerError(f"no C++ compiler ({os.environ.get('CXX', 'c++')!r}) on PATH")
    from filelock import FileLock  # a torch dependency; released by the OS if we are killed

    spec.directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(spec.directory.parent / f"{spec.name}.lock")):
        if force:
            shutil.rmtree(spec.directory, ignore_errors=True)
        if find_built_library(spec) is not None:
            return spec.library
        spec.directory.mkdir(parents=True, exist_ok=True)
        spec.library.unlink(missing_ok=True)  # a library without the marker may be truncated
        with _quiet_cpp_extension() as cpp_extension:
            try:
                cpp_extension.load(
                    name=spec.name,
                    sources=[str(source) for source in SOURCES],
                    extra_cflags=list(spec.cflags),
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(spec.directory),
                    is_python_module=False,
                    verbose=verbose,
                )
            except Exception as error:  # compiler, linker and ninja failures
                raise KernelBuildError(_tail(error)) from error
        sources = "\n".join(str(source) for source in SOURCES)
        spec.marker.write_text(f"{sources}\ntorch {torch.__version__}\n{' '.join(spec.cflags)}\n")
    return spec.library


# ----------------------------------------------------------------------------- in this process
_LOCK = threading.Lock()
_loaded: Path | None = None
_refusal: str | None = None
"""Why the kernel is not used in this process, once decided; None while undecided or loaded."""


def load(*, build_missing: bool = False) -> bool:
    """Whether the kernel is loaded in this process; the first call decides, synchronously.

    Loads an existing build (never builds unless ``build_missing``). Without one, logs one line
    with the build command, and every later call returns False at once.
    """
    if _loaded is not None:
        return True
    if _refusal is not None and not build_missing:
        return False
    with _LOCK:
        if _loaded is None and (_refusal is None or build_missing):
            _decide(build_missing)
        return _loaded is not None


def unavailable_reason() -> str | None:
    """None if the kernel is loaded (deciding now if undecided), else why not."""
    return None if load() else _refusal


@dataclass(frozen=True)
class KernelStatus:
    state: str
    """``loaded`` (in this process), ``built``, ``not built``, ``disabled`` or ``unavailable``."""
    reason: str
    spec: BuildSpec
    compiler: str | None


def status() -> KernelStatus:
    """The kernel's state in this process and on disk; loads nothing."""
    spec, cxx = build_spec(), compiler()
    if _loaded is not None:
        return KernelStatus("loaded", f"loaded from {_loaded}", spec, cxx)
    if _refusal is not None:
        return KernelStatus("unavailable", _refusal, spec, cxx)
    disabled = disabled_reason()
    if disabled:
        return KernelStatus("disabled", f"disabled by {disabled}", spec, cxx)
    if find_built_library(spec) is not None:
        return KernelStatus("built", "built; loaded on first use", spec, cxx)
    return KernelStatus("not built", _missing_message(cxx), spec, cxx)


def _decide(build_missing: bool) -> None:
    global _loaded, _refusal
    disabled = disabled_reason()
    if disabled:
        _refusal = f"the fused C++ kernel is disabled by {disabled}"
        logger.info("fastff: %s; FFF uses the PyTorch strategies", _refusal)
        return
    spec = build_spec()
    library = find_built_library(spec)
    if library is None and build_missing and compiler() is not None:
        try:
            library = build()
        except KernelBuildError as error:
            _refuse(f"building the fused C++ kernel failed: {str(error).splitlines()[-1]}")
            return
    if library is None:
        _refuse(_missing_message(compiler()))
        return
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as error:
        _refuse(
            f"the fused C++ kernel build {library} does not load ({_tail(error, 1)}); "
            f"rebuild it with `{BUILD_COMMAND} --force`"
        )
        return
    _loaded, _refusal = library, None


def _refuse(reason: str) -> None:
    global _refusal
    _refusal = reason
    logger.warning("fastff: %s; FFF uses the PyTorch strategies", reason)


def _missing_message(cxx: str | None) -> str:
    if cxx is None:
        return "the fused C++ kernel is not built and there is no C++ compiler to build it"
    return (
        "the fused C++ kernel is not built for this source, CPU and torch; "
        f"build it once with `{BUILD_COMMAND}` (or `make kernels`)"
    )


def _tail(error: BaseException, lines: int = 20) -> str:
    text = str(error).strip() or type(error).__name__
    return "\n".join(text.splitlines()[-lines:])[:4000]


@contextlib.contextmanager
def _quiet_cpp_extension() -> Iterator[ModuleType]:
    """``torch.utils.cpp_extension`` without its CUDA_HOME warnings, which a CPU build ignores."""
    extension_logger = logging.getLogger("torch.utils.cpp_extension")
    level = extension_logger.level
    extension_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        yield cpp_extension
    finally:
        extension_logger.setLevel(level)


def _isa_flags() -> tuple[str, tuple[str, ...]]:
    """(tag, compiler flags) for the widest vector ISA this x86_64 CPU has.

    AVX-512 (F, VL, BW, DQ) doubles the kernel's vector width; on a Xeon with it, the leaf-8
    Table 1 layer runs 10-20% faster than with AVX2. Named flags, not ``-march=native``, so the
    build runs on any CPU with the same ISA.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic", ()
    try:
        cpu_flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "generic", ()
    if not {"avx2", "fma"} <= cpu_flags:
        return "generic", ()
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= cpu_flags:
        return "avx512", ("-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq")
    return "avx2", ("-mavx2", "-mfma")
