"""A local sweep's state: one JSON file, rewritten atomically after every change, so a sweep
killed at any moment (even with SIGKILL) resumes from its last saved trial."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastff.atomic_json import write_json_atomic
from fastff.sweep.spec import SweepError

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
    ``note``: why a finished trial needs a second look (e.g. it was adopted from a run dir made
    at another git commit).
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
    note: str | None = None


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
        """Read a saved state; anything but what :meth:`save` writes is refused.

        Raises:
            SweepError: the file is unreadable (truncated, empty, not JSON) or holds a key or
                value of the wrong type: one line saying so and how to start over.
        """
        try:
            data = json.loads(path.read_text())
            problem = _state_problem(data)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        if problem:
            raise SweepError(
                f"the sweep state {path} is unreadable ({problem}); run with --new to start "
                "over (the old sweep folder is moved aside, nothing is deleted), or restore the "
                "file"
            )
        trials = [Trial(**t) for t in data.pop("trials", [])]
        return cls(**data, trials=trials)


_NONE = type(None)
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "sweep_file": (str,),
    "fingerprint": (str,),
    "method": (str,),
    "metric": (dict, _NONE),
    "created_at": (str,),
    "updated_at": (str,),
    "version": (int,),
    "trials": (list,),
}
_TRIAL_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "params": (dict,),
    "run_dir": (str,),
    "status": (str,),
    "metric": (int, float, _NONE),
    "exit_code": (int, _NONE),
    "error": (str, _NONE),
    "command": (list,),
    "threads": (int, _NONE),
    "pid": (int, _NONE),
    "attempts": (int,),
    "started_at": (str, _NONE),
    "finished_at": (str, _NONE),
    "wall_time_s": (int, float, _NONE),
    "note": (str, _NONE),
}
assert set(_TRIAL_TYPES) == {f.name for f in fields(Trial)}
_REQUIRED = ("name", "sweep_file", "fingerprint", "method")
_TRIAL_REQUIRED = ("id", "params", "run_dir")


def _type_problem(where: str, data: dict, types: dict[str, tuple[type, ...]]) -> str | None:
    for key, value in data.items():
        if key not in types:
            return f"{where.rstrip('.') or 'it'} has an unknown key {key!r}"
        bad_bool = isinstance(value, bool) and bool not in types[key]
        if bad_bool or not isinstance(value, types[key]):
            allowed = " or ".join("null" if t is _NONE else t.__name__ for t in types[key])
            return f"{where}{key} must be {allowed}, got {value!r:.60}"
    return None


def _state_problem(data: Any) -> str | None:
    """What is wrong with a parsed state.json, or None."""
    if not isinstance(data, dict):
        return f"it holds {type(data).__name__}, not a mapping"
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        return f"it lacks {missing}"
    problem = _type_problem("", data, _STATE_TYPES)
    if problem:
        return problem
    if data.get("version", STATE_VERSION) != STATE_VERSION:
        return f"version {data['version']!r} is not {STATE_VERSION}"
    for index, trial in enumerate(data.get("trials", [])):
        where = f"trials[{index}]."
        if not isinstance(trial, dict):
            return f"trials[{index}] is not a mapping"
        missing = [key for key in _TRIAL_REQUIRED if key not in trial]
        if missing:
            return f"trials[{index}] lacks {missing}"
        problem = _type_problem(where, trial, _TRIAL_TYPES)
        if problem:
            return problem
        if trial.get("status", "pending") not in STATUSES:
            return f"{where}status must be one of {list(STATUSES)}, got {trial['status']!r}"
        if not all(isinstance(part, str) for part in trial.get("command", [])):
            return f"{where}command must be a list of strings"
    return None
