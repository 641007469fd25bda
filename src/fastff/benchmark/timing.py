"""Interleaved, synchronised timing with ``torch.utils.benchmark``."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

# torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on CPU-only machines.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402


def device_timer(device: torch.device) -> Callable[[], float]:
    """A wall clock that first waits for queued work on ``device`` (CUDA is asynchronous)."""
    if device.type == "cuda":

        def synchronised() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return synchronised
    return time.perf_counter


def warm_up(call: Callable[[], Any], calls: int, budget_s: float) -> None:
    """Run ``call`` up to ``calls`` times (at least once), stopping after ``budget_s`` seconds."""
    start = time.perf_counter()
    for _ in range(max(1, calls)):
        call()
        if time.perf_counter() - start > budget_s:
            return


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    *,
    device: torch.device,
    threads: int,
    min_run_time: float,
    repeats: int,
    warmup: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """Median seconds per call of each callable, measured in interleaved rounds.

    Every round times each callable once with ``Timer.blocked_autorange`` (its median); the rounds
    rotate the order, so slow drifts of a shared machine hit every implementation alike. The
    result is the median over rounds. A callable that raises is dropped and its error returned.

    Returns:
        (median seconds by name, error message by name).
    """
    errors: dict[str, str] = {}
    torch.set_num_threads(threads)
    for name, call in calls.items():
        try:
            warm_up(call, warmup, budget_s=max(min_run_time, 1.0))
        except Exception as error:  # report it in the table instead of aborting the benchmark
            errors[name] = f"{type(error).__name__}: {error}"
    names = [name for name in calls if name not in errors]
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(max(1, repeats)):
        shift = round_index % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            if name in errors:
                continue
            timer = benchmark.Timer(
                stmt="call()",
                globals={"call": calls[name]},
                num_threads=threads,
                timer=device_timer(device),
            )
            try:
                rounds[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"
    medians = {name: statistics.median(times) for name, times in rounds.items() if times}
    return medians, errors
