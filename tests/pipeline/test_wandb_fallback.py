"""W&B online without a reachable server falls back to offline in seconds, with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def test_online_without_a_server_records_offline_within_seconds(tmp_path: Path):
    env = {
        **os.environ,
        "WANDB_API_KEY": "a" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens there: like no network
    }
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastff.train",
            "logger.wandb.mode=online",
            "logger.wandb.settings.init_timeout=3",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "W&B online is unavailable" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    assert "Traceback" not in proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert elapsed < 60, f"took {elapsed:.0f} s"  # W&B's own default alone waits 90 s
