"""The C++ CPU kernel's state is settled once, at the start of the session.

Where a C++ compiler exists the kernel is built (a no-op when cached) and loaded before any layer
test runs, so ``auto`` picks the same strategy in every test whatever ran before it; a failed
build fails the ``fused_cpu`` tests instead of skipping them. Only without a compiler (or with
``FASTFF_FUSED_CPU=0``) are they skipped, with the reason.
"""

from __future__ import annotations

import pytest

from fastff.layers.kernels import cpu_build


@pytest.fixture(scope="session", autouse=True)
def cpu_kernel_state() -> tuple[str, str]:
    """("ready" | "skip" | "failed", reason), decided once per test session."""
    if cpu_build.compiler() is None:
        return "skip", "no C++ compiler on PATH to build the fused CPU kernel"
    try:
        cpu_build.build()
    except cpu_build.KernelBuildError as error:
        return "failed", f"a C++ compiler exists but the fused CPU kernel build failed:\n{error}"
    if not cpu_build.load(build_missing=True):
        reason = cpu_build.unavailable_reason() or "not loaded"
        if cpu_build.disabled_reason():
            return "skip", reason
        return "failed", f"the fused CPU kernel was built but is unusable: {reason}"
    return "ready", ""


@pytest.fixture
def fused_kernel(cpu_kernel_state: tuple[str, str]) -> None:
    """The kernel is loaded in this process; fails if it should be and is not."""
    state, reason = cpu_kernel_state
    if state == "failed":
        pytest.fail(reason)
    if state == "skip":
        pytest.skip(reason)
