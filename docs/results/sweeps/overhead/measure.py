"""Sweep overhead: the wall time of a local sweep against the sum of its trials' own
``wall_time_s`` (metrics.json: from the run's start inside fastff.train to its results), with
the warm trial worker and with a fresh process per trial (``--fresh-processes``), interleaved.

    python docs/results/sweeps/overhead/measure.py --rounds 2 -o outputs/overhead

Writes ``overhead.json`` (commands, per-run numbers, machine load) beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "digits6.yaml"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one(mode: str, out: Path) -> dict:
    command = [sys.executable, "-m", "fastff.sweep", str(SWEEP), "-o", str(out), "--jobs", "1"]
    command += ["--new"] + (["--fresh-processes"] if mode == "fresh" else [])
    before = load()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{mode}: exit {done.returncode}: {done.stderr[-2000:]}")
    state = json.loads((out / "overhead_digits6" / "state.json").read_text())
    own = []
    for trial in state["trials"]:
        metrics = json.loads((Path(trial["run_dir"]) / "metrics.json").read_text())
        assert metrics["status"] == "finished", trial["id"]
        own.append(metrics["wall_time_s"])
    runner = [t["wall_time_s"] for t in state["trials"]]
    return {
        "mode": mode,
        "command": " ".join(command[1:]),
        "sweep_wall_s": round(wall, 2),
        "trials": len(own),
        "sum_trial_wall_time_s": round(sum(own), 2),
        "ratio": round(wall / sum(own), 3),
        "sum_runner_trial_time_s": round(sum(runner), 2),
        "loadavg_before": before,
        "loadavg_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("outputs/overhead"))
    parser.add_argument("--json", type=Path, default=HERE / "overhead.json")
    args = parser.parse_args()
    runs = []
    for round_ in range(args.rounds):
        for mode in ("warm", "fresh") if round_ % 2 == 0 else ("fresh", "warm"):
            runs.append(one(mode, args.output_dir / f"{mode}-{round_}"))
            print(json.dumps(runs[-1]), flush=True)
    ratios = {m: [r["ratio"] for r in runs if r["mode"] == m] for m in ("warm", "fresh")}
    result = {
        "what": "sweep wall time / sum of the trials' own metrics.json wall_time_s, 6 digits "
        "trials of 3 epochs at --jobs 1 (digits6.yaml), warm worker vs --fresh-processes, "
        "interleaved in one run",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "git_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip(),
        "runs": runs,
        "ratio_by_mode": ratios,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
