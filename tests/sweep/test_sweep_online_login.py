"""``--online`` / ``--sweep-id`` without a W&B login: one line saying what to do, exit status 2
(no traceback from inside wandb)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flags", [["--online"], ["--sweep-id", "team/proj/abc123"]])
def test_online_without_a_login_is_one_line(tmp_path: Path, flags: list[str]):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # No stored credentials: a fresh home and W&B config folder, no netrc.
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb"), "NETRC": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "fastff.sweep", str(ROOT / "sweeps" / "table1.yaml"), *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --online needs a W&B login")
    assert "`wandb login`" in lines[0] and "drop --online" in lines[0]
