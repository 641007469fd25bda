"""A stand-in trial for fast runner tests: ``python -m fake_trial key=value ... hydra.run.dir=D``.

Writes ``D/metrics.json`` with ``score = -(x - 3)**2`` and the start/end times; ``sleep=S``
sleeps S seconds first; ``fail=true`` prints an error line and exits with status 2; ``threads``
records OMP_NUM_THREADS. ``hydra=true`` writes what a fastff run writes besides: ``status``
``finished``, ``.hydra/overrides.yaml`` and, with ``commit=C``, ``provenance.git.commit`` C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    overrides = [arg for arg in argv if not arg.startswith("hydra.")]
    args = dict(arg.split("=", 1) for arg in argv)
    run_dir = Path(args.pop("hydra.run.dir").strip("'"))
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    time.sleep(float(args.get("sleep", 0)))
    if args.get("fail", "false").lower() == "true":
        print("some progress output")
        print("error: told to fail", file=sys.stderr)
        return 2
    x = float(args.get("x", 0))
    results = {
        "score": -((x - 3.0) ** 2),
        "args": args,
        "started": started,
        "ended": time.time(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "sweep_id": os.environ.get("WANDB_SWEEP_ID"),
    }
    if args.get("hydra", "false").lower() == "true":
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))
        results["status"] = "finished"
        if "commit" in args:
            results["provenance"] = {"git": {"commit": args["commit"]}}
    (run_dir / "metrics.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
