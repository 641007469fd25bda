"""Fast hard-inference strategies for :class:`fastff.layers.FFF` and their automatic selection.

Every strategy computes the same function as ``FFF._hard_forward_plain`` (route each input to one
leaf, going right where the node logit is >= 0, then evaluate only that leaf), (B, D) -> (B, O):

- ``"plain"``: the layer's own vectorised path; gathers the reached leaves' weights per input in
  memory-bounded chunks. Best when few inputs share a leaf; runs everywhere, supports autograd.
- ``"grouped"``: sorts the inputs by leaf and runs one matmul pair per leaf that was reached. Best
  when many inputs share each leaf (batch >> 2**depth); any device and dtype, supports autograd.
- ``"fused_cpu"``: a C++ kernel (``csrc/fff_hard_cpu.cpp``) that walks the tree and evaluates the
  leaf per input row while the row is in cache, rows in parallel, nothing gathered. CPU, float32
  or float64, inference only (no autograd). Compiled with ``torch.utils.cpp_extension`` on first
  use and cached under ``~/.cache/torch_extensions``.
- ``"auto"`` (default): ``fused_cpu`` where it applies and the kernel is built, else ``grouped``
  when at least ``GROUPED_MIN_INPUTS_PER_LEAF`` inputs per leaf are expected, else ``plain``.

The first ``"auto"`` call that could use the kernel starts its build in a background process and
runs a PyTorch strategy meanwhile, so no forward pass waits for the compiler; later calls use the
kernel once it is ready. :func:`load_fused_kernel` builds and loads it in the foreground. Without
a compiler, or if the build fails, one warning line is printed and the PyTorch strategies run.
Set ``FASTFF_FUSED_CPU=0`` to never build or use the kernel.

Force a strategy per layer with ``layer.hard_strategy = "grouped"`` (read by
``FFF._hard_forward_2d``) or per call with :func:`hard_forward_2d`.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

STRATEGIES = ("auto", "plain", "grouped", "fused_cpu")
GROUPED_MIN_INPUTS_PER_LEAF = 32
"""``auto`` groups by leaf when batch / 2**depth reaches this many inputs per leaf."""

FUSED_DTYPES = (torch.float32, torch.float64)
KERNEL_SOURCE = Path(__file__).parent / "csrc" / "fff_hard_cpu.cpp"
DISABLE_ENV = "FASTFF_FUSED_CPU"


# ------------------------------------------------------------------------------- activations
class KernelActivation(enum.IntEnum):
    """Activation codes understood by the C++ kernel (must match ``csrc/fff_hard_cpu.cpp``)."""

    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    GELU = 3
    GELU_TANH = 4
    SILU = 5
    TANH = 6
    SIGMOID = 7


def kernel_activation(module: nn.Module) -> tuple[int, float] | None:
    """(code, parameter) of ``module`` for the C++ kernel, or None if the kernel lacks it."""
    kind = type(module)
    if kind is nn.GELU:
        approximate = getattr(module, "approximate", "none")
        return (KernelActivation.GELU_TANH if approximate == "tanh" else KernelActivation.GELU, 0.0)
    if kind is nn.LeakyReLU:
        return (KernelActivation.LEAKY_RELU, float(module.negative_slope))
    simple = {
        nn.Identity: KernelActivation.IDENTITY,
        nn.ReLU: KernelActivation.RELU,
        nn.SiLU: KernelActivation.SILU,
        nn.Tanh: KernelActivation.TANH,
        nn.Sigmoid: KernelActivation.SIGMOID,
    }
    code = simple.get(kind)
    return None if code is None else (int(code), 0.0)


# ------------------------------------------------------------------------------ fused kernel
def _isa_flags() -> tuple[str, list[str]]:
    """(tag, compiler flags) for the widest vector ISA this x86_64 CPU has.

    AVX-512 (F, VL, BW, DQ) doubles the kernel's vector width; on a Xeon with it, the leaf-8
    Table 1 layer runs 10-20% faster than with AVX2. Named flags, not ``-march=native``, so the
    build runs on any CPU with the same ISA.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic", []
    try:
        cpu_flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "generic", []
    if not {"avx2", "fma"} <= cpu_flags:
        return "generic", []
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= cpu_flags:
        return "avx512", ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    return "avx2", ["-mavx2", "-mfma"]


def _build_spec() -> dict[str, Any]:
    """Arguments for ``torch.utils.cpp_extension.load``.

    The extension name carries the vector ISA and a hash of the source text, its path and the
    flags, so checkouts and versions never share (and rebuild over) one build directory.
    """
    tag, isa = _isa_flags()
    cflags = ["-O3", "-fopenmp", *isa]
    identity = hashlib.sha1(KERNEL_SOURCE.read_bytes())
    identity.update(f"{KERNEL_SOURCE.resolve()}|{cflags}|{torch.__version__}".encode())
    return {
        "name": f"fastff_fff_cpu_{tag}_{identity.hexdigest()[:12]}",
        "sources": [str(KERNEL_SOURCE)],
        "extra_cflags": cflags,
        "extra_ldflags": ["-fopenmp"],
        "is_python_module": False,
        "verbose": False,
    }


STALE_LOCK_SECONDS = 15 * 60
"""A build lock older than this was left by a killed build; torch would wait on it forever."""


def _load_in_this_process() -> None:
    """Build (if needed) and load the kernel library into this process; raises on failure."""
    # cpp_extension logs a CUDA_HOME warning on import that is irrelevant for a CPU kernel.
    extension_logger = logging.getLogger("torch.utils.cpp_extension")
    level = extension_logger.level
    extension_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        spec = _build_spec()
        lock = Path(cpp_extension._get_build_directory(spec["name"], verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
        cpp_extension.load(**spec)
    finally:
        extension_logger.setLevel(level)


class _FusedKernel:
    """Build state of the C++ kernel in this process: unknown, building, ready or failed."""

    def __init__(self) -> None:
        self.state = "unknown"
        self.reason = ""
        self._builder: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._lock = threading.Lock()

    def disabled_reason(self) -> str | None:
        if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            return f"{DISABLE_ENV}=0"
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            return f"no C++ compiler ({compiler!r}) on PATH"
        return None

    def load(self) -> bool:
        """Build and load in the foreground (waits for a background build first)."""
        with self._lock:
            if self.state in ("ready", "failed"):
                return self.state == "ready"
            if self._builder is not None:
                self._builder.wait()
            self._load_now()
            return self.state == "ready"

    def ready_without_waiting(self) -> bool:
        """True if the kernel can be used now; starts or polls a background build otherwise."""
        if self.state == "ready":
            return True
        if self.state == "failed" or not self._lock.acquire(blocking=False):
            return False
        try:
            if self.state == "unknown":
                self._start_background_build()
            elif self.state == "building" and self._builder and self._builder.poll() is not None:
                if self._builder.returncode == 0:
                    self._load_now()
                else:
                    self._fail(f"the build failed (log: {self._log})")
            return self.state == "ready"
        finally:
            self._lock.release()

    def _start_background_build(self) -> None:
        reason = self.disabled_reason()
        if reason:
            self._fail(reason)
            return
        build_root = Path(
            os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")
        )
        build_root.mkdir(parents=True, exist_ok=True)
        self._log = build_root / f"{_build_spec()['name']}.build.log"
        with self._log.open("wb") as log:
            # A separate process finishes the build (and releases torch's build lock) even if
            # this interpreter exits first.
            self._builder = subprocess.Popen(
                [sys.executable, "-m", "fastff.layers.fff_fast"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.state = "building"

    def _load_now(self) -> None:
        reason = self.disabled_reason()
        if reason:
            self._fail(reason)
            return
        try:
            _load_in_this_process()
        except Exception as error:  # any build or load failure means: use PyTorch instead
            last_line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            self._fail(f"the build failed: {last_line[:200]}")
            return
        self.state = "ready"

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        warnings.warn(
            f"fastff: fused C++ FFF kernel unavailable ({reason}); using the PyTorch hard path",
            RuntimeWarning,
            stacklevel=4,
        )


_KERNEL = _FusedKernel()


def load_fused_kernel() -> bool:
    """Build (first time, about 20-60 s) and load the C++ kernel now; True if usable.

    Without a compiler or on a failed build, warns once and returns False.
    """
    return _KERNEL.load()


def fused_kernel_state() -> tuple[str, str]:
    """(state, reason): state is ``unknown``, ``building``, ``ready`` or ``failed``."""
    return _KERNEL.state, _KERNEL.reason


# -------------------------------------------------------------------------------- strategies
def fused_supported(layer: nn.Module, x2d: torch.Tensor) -> bool:
    """Whether ``fused_cpu`` can compute this call (ignoring whether the kernel is built)."""
    if x2d.device.type != "cpu" or x2d.dtype not in FUSED_DTYPES:
        return False
    if kernel_activation(layer.activation) is None:
        return False
    parameters = (layer.node_weights, layer.node_biases, layer.w1s, layer.b1s, layer.w2s)
    if any(p.dtype != x2d.dtype or p.device.type != "cpu" for p in (*parameters, layer.b2s)):
        return False
    needs_grad = x2d.requires_grad or any(p.requires_grad for p in (*parameters, layer.b2s))
    return not (torch.is_grad_enabled() and needs_grad)


def select_strategy(layer: nn.Module, x2d: torch.Tensor) -> str:
    """The strategy ``auto`` runs for this layer and flat input (B, D)."""
    if fused_supported(layer, x2d) and _KERNEL.ready_without_waiting():
        return "fused_cpu"
    if x2d.shape[0] >= GROUPED_MIN_INPUTS_PER_LEAF * layer.n_leaves:
        return "grouped"
    return "plain"


def hard_forward_2d(layer: nn.Module, x2d: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
    """Hard forward of an FFF ``layer`` on a flat batch (B, D) -> (B, O) with ``strategy``.

    Raises:
        ValueError: for an unknown strategy, or ``fused_cpu`` where it cannot run (not CPU
            float32/float64, an activation the kernel lacks, gradients required, or no kernel).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"hard strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        strategy = select_strategy(layer, x2d)
    if strategy == "plain":
        return layer._hard_forward_plain(x2d)
    if strategy == "grouped":
        return grouped_hard_forward(layer, x2d)
    if not fused_supported(layer, x2d):
        raise ValueError(
            "hard strategy 'fused_cpu' needs CPU float32/float64 tensors of one dtype, an "
            "activation the kernel supports and no gradient (use torch.no_grad()); "
            f"got {x2d.device.type} {x2d.dtype}, activation {type(layer.activation).__name__}"
        )
    if not load_fused_kernel():
        raise ValueError(f"hard strategy 'fused_cpu' is unavailable: {_KERNEL.reason}")
    return fused_hard_forward(layer, x2d)


def fused_hard_forward(layer: nn.Module, x2d: torch.Tensor) -> torch.Tensor:
    """The C++ kernel on a flat batch (B, D) -> (B, O); the kernel must be loaded."""
    code, parameter = kernel_activation(layer.activation)
    return torch.ops.fastff.fff_hard_forward(
        x2d.contiguous(),
        layer.node_weights.contiguous(),
        layer.node_biases.contiguous(),
        _w1s_for_kernel(layer.w1s),
        layer.b1s.contiguous(),
        layer.w2s.contiguous(),
        layer.b2s.contiguous(),
        layer.depth,
        code,
        parameter,
    )


def _w1s_for_kernel(w1s: torch.Tensor) -> torch.Tensor:
    """w1s (L, D, l) as stored if the kernel reads that layout, else a contiguous copy."""
    if w1s.is_contiguous() or w1s.transpose(1, 2).is_contiguous():
        return w1s
    return w1s.contiguous()


def grouped_hard_forward(layer: nn.Module, x2d: torch.Tensor) -> torch.Tensor:
    """Inputs sorted by leaf, one matmul pair per reached leaf, (B, D) -> (B, O).

    Temporary memory: one sorted copy of the inputs and outputs, O(B * (D + O)).
    """
    leaves = layer._route(x2d)  # (B,)
    order = torch.argsort(leaves, stable=True)  # (B,) inputs grouped by leaf
    counts = torch.bincount(leaves, minlength=layer.n_leaves).tolist()
    x_sorted = x2d.index_select(0, order)  # (B, D)
    outputs, start = [], 0
    for leaf, count in enumerate(counts):
        if count == 0:
            continue
        rows = x_sorted[start : start + count]  # (count, D)
        hidden = layer.activation(torch.addmm(layer.b1s[leaf], rows, layer.w1s[leaf]))
        outputs.append(torch.addmm(layer.b2s[leaf], hidden, layer.w2s[leaf]))  # (count, O)
        start += count
    if not outputs:
        return x2d.new_zeros((0, layer.out_features))
    y_sorted = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (B, O)
    return torch.empty_like(y_sorted).index_copy_(0, order, y_sorted)


if __name__ == "__main__":  # the background build process started by _FusedKernel
    _load_in_this_process()
