"""A local sweep's state: one JSON file, rewritten atomically after every change, so a sweep
killed at any moment (even with SIGKILL) resumes from its last saved trial."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastff.atomic_json import write_json_atomic

STATE_VERSION = 1
STATUSES = ("pending", "running", "finished", "failed")


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Trial:
    """One trial: its parameters, where it runs and how it ended.

    ``status``: ``pending`` (to run), ``running`` (started; run again after a crash),
    ``finished`` (exit status 0) or ``failed`` (``exit_code`` and ``error``, its last error line).
    """

    id: str
    params: dict[str, Any]
    run_dir: str
    status: str = "pending"
    metric: float | None = None
    exit_code: int | None = None
    error: str | None = None
    command: list[str] = field(default_factory=list)
    threads: int | None = None
    pid: int | None = None
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    wall_time_s: float | None = None


@dataclass
class SweepState:
    """Everything the local runner needs to resume a sweep."""

    name: str
    sweep_file: str
    fingerprint: str
    method: str
    metric: dict[str, Any] | None
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    version: int = STATE_VERSION
    trials: list[Trial] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    def best(self) -> Trial | None:
        """The finished trial with the best metric (by the sweep's goal), or None."""
        scored = [t for t in self.trials if t.status == "finished" and t.metric is not None]
        if not scored:
            return None
        maximize = (self.metric or {}).get("goal", "minimize") == "maximize"
        return (max if maximize else min)(scored, key=lambda t: t.metric)

    def next_id(self) -> str:
        return f"{len(self.trials) + 1:04d}"

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, then ``os.replace``."""
        self.updated_at = now()
        write_json_atomic(path, asdict(self), indent=1, default=None)

    @classmethod
    def load(cls, path: Path) -> SweepState:
        data = json.loads(path.read_text())
        trials = [Trial(**t) for t in data.pop("trials", [])]
        return cls(**data, trials=trials)
