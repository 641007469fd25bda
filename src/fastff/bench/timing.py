"""Interleaved, synchronised timing: ``torch.utils.benchmark`` on the CPU, CUDA events on CUDA."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch


@contextlib.contextmanager
def _quiet_cpp_extension() -> Iterator[None]:
    """torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on CPU-only
    machines; silence that logger while importing, then restore its level."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Within the block torch uses ``threads`` CPU threads; the previous count is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def device_timer(device: torch.device) -> Callable[[], float]:
    """A wall clock that first waits for queued work on ``device`` (CUDA is asynchronous)."""
    if device.type == "cuda":

        def synchronised() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return synchronised
    return time.perf_counter


class CudaEventTimer:
    """Times a callable on CUDA by events recorded on the current stream around blocks of calls
    (the device's own clock: no host synchronisation inside a block), with the interface of
    ``torch.utils.benchmark.Timer.blocked_autorange`` that :func:`time_interleaved` uses."""

    BLOCK_S = 1e-3
    """A block holds enough calls to last at least this long (launch jitter stays small)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call

    def _block(self, number: int) -> float:
        """Seconds of device time for ``number`` calls in a row."""
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(number):
            self.call()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3

    def blocked_autorange(self, min_run_time: float) -> SimpleNamespace:
        """At least three blocks and ``min_run_time`` seconds; ``.median`` seconds per call."""
        number = 1
        while (seconds := self._block(number)) < self.BLOCK_S and number < 2**16:
            number *= 2 if seconds > self.BLOCK_S / 10 else 10
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_run_time:
            times.append(self._block(number) / number)
        return SimpleNamespace(median=statistics.median(times), number_per_run=number)


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
    with _quiet_cpp_extension():
        from torch.utils import benchmark

    def make_timer(call: Callable[[], Any]) -> Any:
        if device.type == "cuda":
            return CudaEventTimer(call)
        return benchmark.Timer(
            stmt="call()", globals={"call": call}, num_threads=threads, timer=device_timer(device)
        )

    with torch_threads(threads):
        return _interleaved_rounds(
            calls, make_timer, min_run_time=min_run_time, repeats=repeats, warmup=warmup
        )


def _interleaved_rounds(
    calls: dict[str, Callable[[], Any]],
    make_timer: Callable[[Callable[[], Any]], Any],
    *,
    min_run_time: float,
    repeats: int,
    warmup: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """The rounds of :func:`time_interleaved`, each callable timed by ``make_timer(call)``."""
    errors: dict[str, str] = {}
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
            timer = make_timer(calls[name])
            try:
                rounds[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"
    medians = {name: statistics.median(times) for name, times in rounds.items() if times}
    return medians, errors
