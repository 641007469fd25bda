"""Inference and training speed benchmark of FFF vs FF vs MoE vs the reference package.

Entry point: ``python -m fastff.bench`` (``conf/bench.yaml``). Modes live in
:mod:`fastff.benchmark.modes`; :func:`fastff.benchmark.runner.run` runs one.
"""

from fastff.benchmark.modes import MODES, register_mode
from fastff.benchmark.runner import run

__all__ = ["MODES", "register_mode", "run"]
