"""Faults never produce a wrong or lost result: divergence, signals, resume, run-dir reuse,
unwritable results, smoke tests."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from pipeline_utils import CONF, run_cli

from fastff.config_checks import ConfigError
from fastff.hydra_app import Terminated
from fastff.train import train
from fastff.training.guards import Diverged
from fastff.training.module import ClassifierModule

QUICK = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu")
COMPARED = ("M_A", "G_A", "ETT_M", "ETT_G", "epochs", "history", "test_acc_soft", "best_val_acc")


def _metrics(cfg) -> dict:
    return json.loads(Path(cfg.paths.output_dir, "metrics.json").read_text())


def _stop_in_epoch(monkeypatch, epoch: int, error: BaseException, method="on_train_epoch_end"):
    """Raise ``error`` from the module hook of 0-based ``epoch``: after the protocol recorded the
    epoch but before its checkpoint was written (a kill between two checkpoints)."""
    original = getattr(ClassifierModule, method)

    def stop(self, *args):
        if self.current_epoch == epoch:
            raise error
        return original(self, *args)

    monkeypatch.setattr(ClassifierModule, method, stop)


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch):
    original = ClassifierModule.training_step

    def nan_in_second_epoch(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * math.nan if self.current_epoch == 1 else loss

    monkeypatch.setattr(ClassifierModule, "training_step", nan_in_second_epoch)
    cfg = make_cfg("trainer.max_epochs=4", "+trainer.limit_train_batches=5", *QUICK)
    with pytest.raises(Diverged, match="loss is nan at epoch 2, batch 1"):
        train(cfg)
    written = _metrics(cfg)
    assert written["status"] == "diverged" and written["G_A"] is None
    assert written["epochs"] == 1 and "Diverged" in written["error"]
    last = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=False)
    assert last["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )


def _resumable_cfg(make_cfg, *extra):
    cfg = make_cfg(
        "trainer.max_epochs=5",
        "layer.region_leak=0.2",  # random draws in training: resumed RNG streams must match too
        "layer.dropout=0.1",
        "seed=11",
        *QUICK,
        *extra,
    )
    cfg.callbacks.early_stopping = None
    return cfg


def test_killed_run_resumed_by_its_own_command_equals_an_uninterrupted_run(make_cfg, monkeypatch):
    uninterrupted = train(_resumable_cfg(make_cfg))
    cfg = _resumable_cfg(make_cfg)
    with monkeypatch.context() as patch:
        _stop_in_epoch(patch, 2, Terminated(signal.SIGTERM))
        with pytest.raises(Terminated):
            train(cfg)
    stopped = _metrics(cfg)
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    assert stopped["epochs"] == 3  # the third epoch ran but its checkpoint was never written
    resumed = train(cfg)  # the same command into the same run dir
    assert resumed["status"] == "finished"
    for key in COMPARED:
        assert resumed[key] == uninterrupted[key], key
    assert _metrics(cfg)["history"] == uninterrupted["history"]


def test_ckpt_path_last_resumes_the_run_dir(make_cfg, monkeypatch):
    cfg = _resumable_cfg(make_cfg, "trainer.max_epochs=3")
    with monkeypatch.context() as patch:
        _stop_in_epoch(patch, 1, KeyboardInterrupt())
        with pytest.raises(SystemExit):
            train(cfg)
    assert _metrics(cfg)["status"] == "interrupted"
    cfg.ckpt_path = "last"
    resumed = train(cfg)
    assert resumed["status"] == "finished" and resumed["epochs"] == 3
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]


def test_ckpt_path_last_without_a_checkpoint_is_a_clear_error(make_cfg):
    with pytest.raises(ConfigError, match="ckpt_path=last: no checkpoint at"):
        train(make_cfg("ckpt_path=last", *QUICK))


def test_a_finished_run_dir_is_never_reused(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "+trainer.limit_train_batches=2", *QUICK)
    train(cfg)
    before = _metrics(cfg)
    with pytest.raises(ConfigError, match="holds a run with status 'finished'"):
        train(cfg)
    assert _metrics(cfg) == before
    assert sorted(p.name for p in Path(cfg.paths.output_dir, "checkpoints").iterdir()) == sorted(
        ["last.ckpt", next(Path(cfg.paths.output_dir, "checkpoints").glob("best-*")).name]
    )


def test_an_unfinished_run_of_another_config_is_not_resumed(make_cfg, monkeypatch):
    cfg = _resumable_cfg(make_cfg, "trainer.max_epochs=3")
    with monkeypatch.context() as patch:
        _stop_in_epoch(patch, 1, Terminated(signal.SIGTERM))
        with pytest.raises(Terminated):
            train(cfg)
    cfg.seed = 12
    with pytest.raises(ConfigError, match="unfinished run of another configuration"):
        train(cfg)


def test_interrupt_during_start_up_still_writes_metrics(make_cfg, monkeypatch):
    def interrupted(*args, **kwargs):
        raise Terminated(signal.SIGINT)

    monkeypatch.setattr("fastff.training.assembly.build_model", interrupted)
    cfg = make_cfg(*QUICK)
    with pytest.raises(Terminated):
        train(cfg)
    written = _metrics(cfg)
    assert written["status"] == "interrupted" and written["signal"] == "SIGINT"
    assert written["config"]["seed"] == cfg.seed


def test_unwritable_metrics_fail_the_run_and_are_saved_elsewhere(make_cfg, monkeypatch, capsys):
    """A metrics.json that cannot be written at the end (a full disk): the results are printed
    and saved to a named fallback with status failed, the run fails (ResultsNotSaved), and the
    metrics.json written at the start stays as it was."""
    from fastff.atomic_json import write_json_atomic
    from fastff.training.run_results import ResultsNotSaved

    calls = []

    def full_disk_after_the_first(path, data, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return write_json_atomic(path, data, **kwargs)

    monkeypatch.setattr("fastff.training.run_results.write_json_atomic", full_disk_after_the_first)
    cfg = make_cfg("trainer.max_epochs=1", "+trainer.limit_train_batches=2", *QUICK)
    with pytest.raises(ResultsNotSaved, match="No space left on device") as caught:
        train(cfg)
    assert _metrics(cfg)["status"] == "running"  # the one written at the start, intact
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: cannot write")]
    fallback = Path(warnings[-1].rsplit(" ", 1)[1])
    assert str(fallback) in str(caught.value)
    saved = json.loads(fallback.read_text())
    assert saved["status"] == "failed" and "No space left on device" in saved["error"]
    assert saved["G_A"] is not None and f'"G_A": {saved["G_A"]}' in err
    fallback.unlink()


def test_metrics_unwritable_from_the_start_stop_before_any_work(make_cfg, monkeypatch):
    from fastff.training.run_results import ResultsNotSaved

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("fastff.training.run_results.write_json_atomic", refuse)
    cfg = make_cfg(*QUICK)
    with pytest.raises(ResultsNotSaved, match="Permission denied"):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()


def test_no_training_batches_is_a_smoke_test_not_a_result(make_cfg):
    results = train(make_cfg("trainer.max_epochs=1", "+trainer.limit_train_batches=0", *QUICK))
    assert results["status"] == "smoke_test"


def test_default_run_dirs_of_the_same_second_differ():
    def run_dir() -> str:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]

    first, second = run_dir(), run_dir()
    assert first != second
    assert first.rsplit("_", 1)[0][:-2] == second.rsplit("_", 1)[0][:-2]  # date and time


CLI_SHORT = ("logger=none", "callbacks.rich_progress_bar=null", "trainer=cpu", "seed=5")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_divergence_through_the_command_line(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "fastff.train",
        "optimizer=sgd",
        "optimizer.lr=1e30",
        "layer=ff",
        *CLI_SHORT,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "training diverged" in line and "optimizer.lr=1e+30" in line
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"


def test_sigterm_exits_143_keeps_results_and_the_same_command_resumes(tmp_path: Path):
    run_dir = tmp_path / "run"
    args = ["trainer.max_epochs=5", *CLI_SHORT, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastff.train", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM" in stderr
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    assert last.exists() and stopped["epochs"] < 5

    again = run_cli("fastff.train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    finished = json.loads((run_dir / "metrics.json").read_text())
    assert finished["status"] == "finished"
    assert [row["epoch"] for row in finished["history"]] == [1, 2, 3, 4, 5]
    assert finished["history"][: stopped["epochs"] - 1] == stopped["history"][:-1] or (
        finished["history"][: stopped["epochs"]] == stopped["history"]
    )

    refused = run_cli("fastff.train", *args, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = _error_lines(refused.stderr)
    assert "holds a run with status 'finished'" in line
