"""Hydra's submitit launcher: ``hydra/launcher=slurm`` yields the sbatch settings expected (no
cluster here), and ``hydra/launcher=local`` (submitit's local executor) runs a multirun's trial."""

from __future__ import annotations

import json

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from pipeline_utils import CONF, run_cli
from submitit.slurm import slurm

from fastff.training.builders import cluster_plugins


class _Submitted(Exception):
    """Raised instead of submitting the jobs."""


def _sbatch_script(monkeypatch, tmp_path, *overrides: str) -> tuple[str, submitit.Executor]:
    """The sbatch script the launcher would submit for one job of ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    executors: list[submitit.AutoExecutor] = []

    class Recording(submitit.AutoExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            executors.append(self)

        def map_array(self, *args):
            raise _Submitted

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun
    monkeypatch.setattr(submitit, "AutoExecutor", Recording)
    with pytest.raises(_Submitted):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    executor = executors[0]._executor
    return executor._make_submission_file_text("python -m fastff.train", "uid"), executor


def test_slurm_launcher_gives_one_task_per_device(monkeypatch, tmp_path):
    script, executor = _sbatch_script(
        monkeypatch,
        tmp_path,
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=600",
        "hydra.launcher.mem_gb=128",
    )
    for line in (
        "--partition=gpu",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--mem=128GB",
        "--time=600",
        "--signal=USR2@120",  # submitit's checkpoint/requeue signal
    ):
        assert f"#SBATCH {line}\n" in script
    assert "srun" in script
    assert executor.max_num_timeout == 5


def test_slurm_launcher_defaults_follow_the_default_trainer(monkeypatch, tmp_path):
    script, _ = _sbatch_script(monkeypatch, tmp_path, "hydra.launcher.gpus_per_node=null")
    assert "#SBATCH --nodes=1\n" in script and "#SBATCH --ntasks-per-node=1\n" in script
    assert "--partition" not in script and "--gpus-per-node" not in script


def test_lightning_slurm_auto_requeue_is_off_under_slurm(monkeypatch):
    assert cluster_plugins({}) == {}  # not under SLURM: Lightning's defaults
    for key, value in {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NAME": "fastff",
        "SLURM_NODELIST": "node1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(key, value)
    [environment] = cluster_plugins({})["plugins"]
    assert environment.auto_requeue is False


@pytest.mark.slow
def test_local_submitit_multirun_completes_a_trial(tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = run_cli(
        "fastff.train",
        "--multirun",
        "hydra/launcher=local",
        "data=digits",
        "trainer.fast_dev_run=true",
        "logger=none",
        "seed=3",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in done.stdout + done.stderr
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert metrics["status"] == "smoke_test"
    assert metrics["seed"] == 3 and metrics["G_A"] is not None
    assert (sweep_dir / ".submitit").is_dir()  # the job went through submitit


@pytest.mark.parametrize(("launcher", "srun", "refused"), [("slurm", None, True),
                                                           ("slurm", "/usr/bin/srun", False),
                                                           ("local", None, False)])  # fmt: skip
def test_slurm_launcher_without_slurm_is_one_line(monkeypatch, launcher, srun, refused):
    from fastff import hydra_app

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    monkeypatch.setattr(hydra_app.shutil, "which", lambda name: srun if name == "srun" else None)
    line = hydra_app.slurm_launcher_problem(cfg)
    assert (line is not None) is refused
    if refused:
        assert line.startswith("error: hydra/launcher=slurm: this machine has no SLURM")
        assert "hydra/launcher=local" in line and "\n" not in line
